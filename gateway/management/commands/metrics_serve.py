"""`manage.py metrics_serve [--bind 127.0.0.1:9108]`: this host's process metrics over HTTP, for a host that
runs Celery workers but no web process (docs/OPERATIONS.md). Only what the host's processes counted (the
multiprocess files); the database's view is served by the web's /metrics. It listens where --bind says
and nowhere else: bind it to an address only the scraper reaches."""

from __future__ import annotations

from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.core.management.base import BaseCommand, CommandError
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.metrics import multiprocess_dir


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes every few seconds: not worth a log line each
        pass


class Command(BaseCommand):
    help = "Serve this host's process metrics (multiprocess files) for Prometheus."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:9108", help="address:port (default 127.0.0.1:9108)")

    def handle(self, *args, bind: str, **options):
        if multiprocess_dir() is None:
            raise CommandError("PROMETHEUS_MULTIPROC_DIR is not set")
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError("--bind is address:port")
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        server = make_server(host.strip("[]"), int(port), make_wsgi_app(registry), handler_class=_Quiet)
        self.stdout.write(f"metrics of {multiprocess_dir()} at http://{bind}/metrics")
        server.serve_forever()

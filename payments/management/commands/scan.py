from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from payments.scanning import network_scan

from ._network_option import network_and_backend


class Command(BaseCommand):
    help = "Scan a network's new blocks into observations (what Celery beat runs), once or until caught up."

    def add_arguments(self, parser):
        parser.add_argument("--network", required=True)
        parser.add_argument("--once", action="store_true", help="one batch only")
        parser.add_argument("--max-blocks", type=int, default=500, help="blocks per batch")

    def handle(self, *args, **options):
        network, backend = network_and_backend(options["network"])
        while True:
            report = network_scan(backend=backend, now=timezone.now(), max_blocks=options["max_blocks"])
            if report.locked_out:
                raise CommandError(f"another scanner holds {network.code}; try again later")
            self.stdout.write(
                f"{network.code}: scanned to {report.end} (tip {report.tip}, lag {report.lag}), "
                f"{report.transfers} transfers"
                + (f", reorg back to {report.reorg_fork}" if report.reorg_fork else "")
            )
            if options["once"] or not report.lag:
                return

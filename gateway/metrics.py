"""Prometheus metrics at `/metrics`.

Two kinds:

- **What processes count** as they work (intents created, create latency, observations recorded, webhook
  attempts by outcome and their latency). Every gateway process on a host (gunicorn's workers, Celery's
  worker processes) writes them to files under `PROMETHEUS_MULTIPROC_DIR` (set by the settings to
  `GATEWAY_STATE_DIR/metrics`): prometheus-client's multiprocess mode, so that `/metrics`, whichever
  worker answers it, sums the whole host. A host that runs only Celery workers serves its own with
  `manage.py metrics_serve`. The files of processes that ended are folded into one archive file per kind,
so the host's counts never go backwards.
- **What the database knows** at scrape time (intents by state, each network's scan lag, last success
  and errors, the webhook backlog and its age, open support cases per kind): the same from every host.

`/metrics` is answered only to a client whose address is in GATEWAY_METRICS_ALLOWED_NETWORKS or that
sends `Authorization: Bearer <GATEWAY_METRICS_TOKEN>`; anyone else gets a 404. Neither is set by default:
metrics are off until an operator says who may read them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import ipaddress
import os
import re
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

INTENTS_CREATED = Counter(
    "gateway_payment_intents_created",
    "Payment intents created (an idempotent replay is not counted), by network and asset chosen at creation",
    ["network", "asset"],
)
INTENT_CREATE_SECONDS = Histogram(
    "gateway_payment_intent_create_seconds",
    "Time to answer POST /api/v1/payment-intents, by HTTP status",
    ["status"],
    buckets=LATENCY_BUCKETS,
)
OBSERVATIONS_RECORDED = Counter(
    "gateway_chain_observations_recorded",
    "Chain observations recorded for the first time (a transfer seen again is not counted), by network",
    ["network"],
)
WEBHOOK_ATTEMPTS = Counter(
    "gateway_webhook_attempts", "Webhook delivery attempts by outcome (succeeded, failed, lost)", ["outcome"]
)
WEBHOOK_LOST_ANSWERED = Counter(
    "gateway_webhook_lost_attempts_answered",
    "Attempts counted lost (their worker's lease ran out) whose answer was recorded after all, replacing "
    "the lost row (counted under their outcome too); summed over every process, lost minus this is the "
    "lost attempts whose answer was never recorded",
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "gateway_webhook_attempt_seconds",
    "Time from sending a webhook to its endpoint's answer (or the attempt's failure)",
    buckets=LATENCY_BUCKETS,
)
_COUNTED = (
    INTENTS_CREATED,
    INTENT_CREATE_SECONDS,
    OBSERVATIONS_RECORDED,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_LOST_ANSWERED,
    WEBHOOK_ATTEMPT_SECONDS,
)

_PID_FILE = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def multiprocess_dir_tidy() -> int:
    """Fold the files of processes that no longer run into one archive file per kind (`counter_archive.db`,
    `histogram_archive.db`) and remove them: the host's sums keep every count a dead process made (a
    counter never goes backwards when a sibling service restarts), and the directory stays one file per
    live process. gunicorn calls this as it starts and as each worker exits, Celery as a worker starts.
    Scrapes read under the same lock, so none sees a count twice or not at all. Returns the files folded."""
    directory = multiprocess_dir()
    if directory is None or not directory.is_dir():
        return 0
    folded = 0
    with _locked(directory, fcntl.LOCK_EX):
        archives: dict[str, MmapedDict] = {}
        try:
            for path in sorted(directory.glob("*.db")):
                match = _PID_FILE.search(path.name)
                if not match or _alive(int(match.group(1))):
                    continue
                kind = path.name.split("_", 1)[0]
                if kind in ("counter", "histogram"):
                    if kind not in archives:
                        archives[kind] = MmapedDict(str(directory / f"{kind}_archive.db"))
                    archive = archives[kind]
                    for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
                        current, _ = archive.read_value(key)
                        archive.write_value(key, current + value, 0.0)
                path.unlink(missing_ok=True)  # a dead process's gauges go with it
                folded += 1
        finally:
            for archive in archives.values():
                archive.close()
    return folded


@contextlib.contextmanager
def _locked(directory: Path, mode: int) -> Iterator[None]:
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DatabaseCollector(Collector):
    """What the database says at scrape time. A failed query makes `gateway_metrics_database_up` 0 and
    leaves the rest out, rather than failing the scrape."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("gateway_metrics_database_up", "1 when the database answered this scrape")
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"SET LOCAL statement_timeout = {int(settings.GATEWAY_METRICS_QUERY_TIMEOUT_S * 1000)}"
                    )
                metrics = list(self._read())
        except DatabaseError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self) -> Iterator[Metric]:
        from payments.models import PaymentIntent
        from payments.selectors_operations import watched_networks_scan, webhook_backlog
        from support.models import SupportCase

        now = timezone.now()
        intents = GaugeMetricFamily("gateway_payment_intents", "Payment intents by state", labels=["state"])
        for state, n in PaymentIntent.objects.order_by().values_list("state").annotate(n=Count("id")):
            intents.add_metric([state], n)
        yield intents

        lag = GaugeMetricFamily(
            "gateway_scan_lag_blocks",
            "Blocks the last successful scan left behind the tip",
            labels=["network"],
        )
        last = GaugeMetricFamily(
            "gateway_scan_last_success_timestamp_seconds",
            "When the network's last scan succeeded (Unix time)",
            labels=["network"],
        )
        errors = CounterMetricFamily(
            "gateway_scan_errors", "Scans that failed, by network", labels=["network"]
        )
        in_a_row = GaugeMetricFamily(
            "gateway_scan_errors_in_a_row", "Scans failed since the last success", labels=["network"]
        )
        for scan in watched_networks_scan():
            if scan.lag_blocks is not None:
                lag.add_metric([scan.code], scan.lag_blocks)
            if scan.last_success_at is not None:
                last.add_metric([scan.code], scan.last_success_at.timestamp())
            errors.add_metric([scan.code], scan.errors_total)
            in_a_row.add_metric([scan.code], scan.errors_in_a_row)
        yield from (lag, last, errors, in_a_row)

        pending = webhook_backlog(now=now)
        backlog = GaugeMetricFamily(
            "gateway_webhook_backlog",
            "Webhook work waiting: events not yet dispatched, attempts due now, deliveries pending in all",
            labels=["kind"],
        )
        backlog.add_metric(["undispatched_events"], pending.undispatched_events)
        backlog.add_metric(["attempts_due"], pending.attempts_due)
        backlog.add_metric(["deliveries_pending"], pending.deliveries_pending)
        yield backlog
        yield GaugeMetricFamily(
            "gateway_webhook_backlog_age_seconds",
            "How long the oldest due webhook work has waited",
            value=pending.age_s(now),
        )

        cases = GaugeMetricFamily(
            "gateway_support_cases_open", "Unresolved support cases by kind", labels=["kind"]
        )
        open_cases = dict(
            SupportCase.objects.exclude(status=SupportCase.Status.RESOLVED)
            .order_by()
            .values_list("kind")
            .annotate(n=Count("id"))
        )
        for kind in SupportCase.Kind.values:
            cases.add_metric([kind], open_cases.get(kind, 0))
        yield cases


def allowed(request: HttpRequest) -> bool:
    """The token (constant-time), or a client address in the allowed networks (the address the rate
    limits use: the peer, or behind GATEWAY_TRUSTED_PROXIES the client they forward for)."""
    from payments.ratelimit import client_address

    token = settings.GATEWAY_METRICS_TOKEN
    if token:
        sent = request.META.get("HTTP_AUTHORIZATION", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return True
    networks = settings.GATEWAY_METRICS_ALLOWED_NETWORKS
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def exposition() -> bytes:
    directory = multiprocess_dir()
    processes = CollectorRegistry()
    if directory is not None:
        MultiProcessCollector(processes)
    else:
        for metric in _COUNTED:
            processes.register(metric)
    database = CollectorRegistry()
    database.register(DatabaseCollector())
    if directory is None:
        counted = generate_latest(processes)
    else:
        with _locked(directory, fcntl.LOCK_SH):  # never halfway through a tidy
            counted = generate_latest(processes)
    return counted + generate_latest(database)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        return HttpResponseNotFound(b"", content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)

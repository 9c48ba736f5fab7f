"""Liveness and readiness, for load balancers, orchestrators and the operator's monitoring.

`/healthz` answers as long as the web process can answer at all: it touches nothing else, so a restart
is never triggered by a database or broker outage that restarting would not fix.

`/readyz` says whether this deployment can do its job now, check by check (JSON; 200 when all pass, 503
when any fails):

- `database`: PostgreSQL answers;
- `migrations`: every migration this code has is applied (a web process started before `migrate` ran on
  an upgrade is not ready);
- `broker`: the Celery broker accepts a connection (scans, webhooks and the beat's work go through it);
- `caches`: each Redis the caches use answers (the rate limits' counts live there), when Redis is used;
- `scan`: each watched network (enabled, with a node) had a successful scan within
  GATEWAY_READY_SCAN_MAX_AGE_S and is at most GATEWAY_READY_SCAN_MAX_LAG_BLOCKS behind its node's tip;
- `webhooks`: the oldest webhook work that is due (an event not yet dispatched, an attempt past its time)
  waits at most GATEWAY_READY_WEBHOOK_BACKLOG_S.

A threshold of 0 leaves its check out. No check shows a credential: errors are redacted as node URLs are,
and the checks' details are shown only to the clients allowed to read the metrics. The checks run at most
once per GATEWAY_READY_CACHE_S (1 s) per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from payments.chains.redaction import redact_text


@dataclass
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail}


def _url_of(database: BaseDatabaseWrapper) -> str:
    """The connection's own settings as a URL, for redaction (its password may differ from DATABASE_URL's)."""
    d = database.settings_dict
    return f"postgresql://{d.get('USER') or ''}:{d.get('PASSWORD') or ''}@{d.get('HOST') or ''}/{d.get('NAME') or ''}"


def _error(exc: BaseException, *urls: str) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    for url in urls:
        text = redact_text(text, url=url)
    return text[:300]


def database_check(database: BaseDatabaseWrapper) -> Check:
    started = time.monotonic()
    try:
        with database.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        database.close()  # the next probe connects afresh rather than reusing a broken connection
        return Check(False, {"error": _error(exc, settings.DATABASE_URL, _url_of(database))})
    return Check(True, {"ms": round((time.monotonic() - started) * 1000, 1)})


def migrations_check() -> Check:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        first = plan[0][0]
        return Check(False, {"unapplied": len(plan), "first": f"{first.app_label}.{first.name}"})
    return Check(True)


def broker_check() -> Check:
    from gateway.celery import app

    started = time.monotonic()
    timeout = settings.GATEWAY_READY_TIMEOUT_S
    try:
        with app.connection_for_write(
            settings.CELERY_BROKER_URL,
            connect_timeout=timeout,
            # Redis: connect_timeout bounds only the TCP connect; a server that accepts and never answers
            # would hold the probe (and its web thread) for good without a socket timeout.
            transport_options={
                **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            },
        ) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception as exc:  # any transport's failure means "not reachable"; shown redacted
        return Check(False, {"error": _error(exc, settings.CELERY_BROKER_URL)})
    return Check(True, {"ms": round((time.monotonic() - started) * 1000, 1)})


def caches_check() -> Check:
    """Each Redis the caches use (the rate limits' counts: the checkout and the API answer 500 without
    them) answers a PING."""
    import redis

    timeout = settings.GATEWAY_READY_TIMEOUT_S
    servers: dict[str, Any] = {}
    for alias, config in settings.CACHES.items():
        if not config["BACKEND"].endswith("RedisCache"):
            continue
        started = time.monotonic()
        try:
            client = redis.Redis.from_url(
                config["LOCATION"], socket_connect_timeout=timeout, socket_timeout=timeout
            )
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # unreachable, refused, auth: not ready; shown redacted
            servers[alias] = {"ok": False, "error": _error(exc, config["LOCATION"])}
            continue
        servers[alias] = {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
    return Check(all(c["ok"] for c in servers.values()), {"caches": servers})


def scan_check(now: datetime) -> Check:
    from payments.selectors_operations import watched_networks_scan

    max_age = settings.GATEWAY_READY_SCAN_MAX_AGE_S
    max_lag = settings.GATEWAY_READY_SCAN_MAX_LAG_BLOCKS
    networks: dict[str, dict[str, Any]] = {}
    for scan in watched_networks_scan():
        last = scan.last_success_at
        age = None if last is None else round((now - last).total_seconds(), 1)
        problems = []
        if max_age and (age is None or age > max_age):
            problems.append("never scanned" if age is None else f"no successful scan for {age:g} s")
        if max_lag and scan.lag_blocks is not None and scan.lag_blocks > max_lag:
            problems.append(f"{scan.lag_blocks} blocks behind the node")
        networks[scan.code] = {
            "ok": not problems,
            "last_success_age_s": age,
            "lag_blocks": scan.lag_blocks,
            "errors_in_a_row": scan.errors_in_a_row,
            **({"problem": "; ".join(problems)} if problems else {}),
        }
    return Check(all(n["ok"] for n in networks.values()), {"networks": networks})


def webhooks_check(now: datetime) -> Check:
    from payments.selectors_operations import webhook_backlog

    backlog = webhook_backlog(now=now)
    age = round(backlog.age_s(now), 1)
    detail: dict[str, Any] = {
        "undispatched_events": backlog.undispatched_events,
        "attempts_due": backlog.attempts_due,
        "backlog_age_s": age,
    }
    ok = age <= settings.GATEWAY_READY_WEBHOOK_BACKLOG_S
    if not ok:
        detail["problem"] = f"webhook work has waited {age:g} s (workers on the webhooks queue running?)"
    return Check(ok, detail)


def _in_database(check: Callable[[], Check]) -> Check:
    """A check that reads tables: bounded by a statement timeout, its failure reported, not raised."""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SET LOCAL statement_timeout = {int(settings.GATEWAY_READY_TIMEOUT_S * 1000)}"
                )
            return check()
    except DatabaseError as exc:
        return Check(False, {"error": _error(exc, settings.DATABASE_URL)})


def readiness(now: datetime, database: BaseDatabaseWrapper | None = None) -> dict[str, Check]:
    """Every check, by name. The checks that need the database are skipped (failed) when it is down."""
    checks = {"database": database_check(database or connection)}
    if checks["database"].ok:
        checks["migrations"] = _in_database(migrations_check)
    else:
        checks["migrations"] = Check(False, {"error": "skipped: the database is not reachable"})
    checks["broker"] = broker_check()
    if any(c["BACKEND"].endswith("RedisCache") for c in settings.CACHES.values()):
        checks["caches"] = caches_check()
    readers: list[tuple[str, bool, Callable[[], Check]]] = [
        (
            "scan",
            bool(settings.GATEWAY_READY_SCAN_MAX_AGE_S or settings.GATEWAY_READY_SCAN_MAX_LAG_BLOCKS),
            lambda: scan_check(now),
        ),
        ("webhooks", bool(settings.GATEWAY_READY_WEBHOOK_BACKLOG_S), lambda: webhooks_check(now)),
    ]
    for name, wanted, check in readers:
        if not wanted:
            continue
        if checks["database"].ok:
            checks[name] = _in_database(check)
        else:
            checks[name] = Check(False, {"error": "skipped: the database is not reachable"})
    return checks


_last: tuple[float, dict[str, Check]] | None = None
_last_lock = threading.Lock()


def readiness_cached(now: datetime) -> dict[str, Check]:
    """The checks, run at most once per GATEWAY_READY_CACHE_S in this process: a flood of probes costs
    one round of checks a second, not one each."""
    global _last
    ttl = settings.GATEWAY_READY_CACHE_S
    with _last_lock:
        if _last is not None and ttl > 0 and time.monotonic() - _last[0] < ttl:
            return _last[1]
        checks = readiness(now)
        _last = (time.monotonic(), checks)
        return checks


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 or 503 for anyone (load balancers); each check's figures only for the clients that may read the
    metrics (GATEWAY_METRICS_ALLOWED_NETWORKS or the token): they name networks, backlogs and addresses."""
    from gateway.metrics import allowed

    checks = readiness_cached(timezone.now())
    ready = all(check.ok for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
    if allowed(request):
        body["checks"] = {n: c.as_json() for n, c in checks.items()}
    return JsonResponse(body, status=200 if ready else 503)


class ProbeMiddleware:
    """`/healthz`, `/readyz` and `/metrics` answered before Django validates the Host header: probes and
    scrapers address the process by its IP (`http://10.0.0.7:8000/readyz`), which DJANGO_ALLOWED_HOSTS
    (the public name) rightly refuses for everything else."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        from gateway.metrics import metrics_view

        self.get_response = get_response
        self.views = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = self.views.get(request.path_info)
        return view(request) if view is not None else self.get_response(request)

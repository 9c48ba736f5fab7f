"""`/healthz` and `/readyz` as a load balancer and an operator read them: the real database, the machine's
Redis and RabbitMQ as brokers, a closed port as a broker or database that is down."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from devchain.anvil import free_port
from gateway import health
from payments.models import Event, Network, ScanStatus, WebhookDelivery
from payments.webhooks import endpoints
from payments.webhooks.delivery import events_dispatch
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = [pytest.mark.django_db, pytest.mark.networks_as_migrated]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(autouse=True)
def operator_view(settings):
    """The tests read the checks' details as the operator's own host does, and every probe runs them."""
    settings.GATEWAY_METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.GATEWAY_READY_CACHE_S = 0


def ready(client):
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def test_healthz_answers_without_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_when_everything_answers(client):
    status, body = ready(client)
    assert status == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "broker", "scan", "webhooks"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["webhooks"] == {
        "ok": True,
        "undispatched_events": 0,
        "attempts_due": 0,
        "backlog_age_s": 0.0,
    }


def test_readyz_only_reads(client):
    assert client.post("/readyz").status_code == 405


@pytest.mark.parametrize("url", [REDIS_URL, RABBITMQ_URL], ids=["redis", "rabbitmq"])
def test_broker_reachable_and_not(client, settings, url):
    settings.CELERY_BROKER_URL = url
    status, body = ready(client)
    assert status == 200, body
    assert body["checks"]["broker"]["ok"]

    scheme, rest = url.split("://", 1)
    settings.CELERY_BROKER_URL = (
        f"{scheme}://guest:hunter2secret@127.0.0.1:{free_port()}/{rest.split('/', 1)[1]}"
    )
    status, body = ready(client)
    assert status == 503 and body["status"] == "not_ready"
    broker = body["checks"]["broker"]
    assert broker["ok"] is False and "refused" in broker["error"].lower()
    assert "hunter2secret" not in str(body)
    assert body["checks"]["database"]["ok"]  # only the broker failed


def test_database_down_fails_and_skips_what_needs_it():
    down = DatabaseWrapper(
        {
            **connection.settings_dict,
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "PASSWORD": "pg-secret-pw",
        },
        alias="probe",
    )
    checks = health.readiness(timezone.now(), database=down)
    assert checks["database"].ok is False
    assert "refused" in checks["database"].detail["error"].lower()
    assert "pg-secret-pw" not in str(checks["database"].detail)
    for name in ("migrations", "scan", "webhooks"):
        assert checks[name].ok is False and checks[name].detail["error"].startswith("skipped")


def test_unapplied_migration_is_not_ready(client):
    ((app, latest),) = MigrationLoader(connection).graph.leaf_nodes("payments")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE app = %s AND name = %s", [app, latest])
    status, body = ready(client)
    assert status == 503
    assert body["checks"]["migrations"] == {"ok": False, "unapplied": 1, "first": f"payments.{latest}"}


def watched(code: str = "ethereum") -> Network:
    network = Network.objects.get(code=code)
    network.enabled, network.rpc_url = True, "http://user:node-secret@127.0.0.1:9/v3/apikey123456"
    network.save()
    return network


def test_a_watched_network_never_scanned_is_not_ready(client):
    watched()
    status, body = ready(client)
    assert status == 503
    scan = body["checks"]["scan"]["networks"]["ethereum"]
    assert scan["ok"] is False and scan["problem"] == "never scanned"
    assert "node-secret" not in str(body) and "apikey123456" not in str(body)


@pytest.mark.parametrize(
    ("age_s", "lag", "ok", "problem"),
    [
        (3, 0, True, None),
        (119, 50, True, None),
        (121, 0, False, r"no successful scan for 121(\.\d)? s"),  # the request's own time added
        (3, 51, False, "51 blocks behind the node"),
    ],
)
def test_scan_age_and_lag_against_the_thresholds(client, settings, age_s, lag, ok, problem):
    settings.GATEWAY_READY_SCAN_MAX_AGE_S, settings.GATEWAY_READY_SCAN_MAX_LAG_BLOCKS = 120, 50
    network = watched()
    ScanStatus.objects.create(
        network=network, last_success_at=timezone.now() - timedelta(seconds=age_s), lag_blocks=lag
    )
    status, body = ready(client)
    scan = body["checks"]["scan"]["networks"]["ethereum"]
    assert (status, scan["ok"], scan["lag_blocks"]) == (200 if ok else 503, ok, lag)
    if problem is None:
        assert "problem" not in scan
    else:
        assert re.fullmatch(problem, scan["problem"]), scan["problem"]


def test_thresholds_of_zero_leave_checks_out(client, settings):
    settings.GATEWAY_READY_SCAN_MAX_AGE_S = settings.GATEWAY_READY_SCAN_MAX_LAG_BLOCKS = 0
    settings.GATEWAY_READY_WEBHOOK_BACKLOG_S = 0
    watched()
    status, body = ready(client)
    assert status == 200 and set(body["checks"]) == {"database", "migrations", "broker"}


def test_webhook_backlog_age(client, settings, loopback_webhooks):
    settings.GATEWAY_READY_WEBHOOK_BACKLOG_S = 300
    merchant = make_merchant()
    endpoints.endpoint_create(
        merchant=merchant,
        url="http://127.0.0.1:9/hook",
        event_types=(),
        now=timezone.now() - timedelta(hours=1),
    )
    new_intent(merchant)  # two events, not yet dispatched
    status, body = ready(client)
    assert status == 200 and body["checks"]["webhooks"]["undispatched_events"] == 2

    Event.objects.update(created_at=timezone.now() - timedelta(seconds=400))
    status, body = ready(client)
    webhooks = body["checks"]["webhooks"]
    assert status == 503 and webhooks["ok"] is False and webhooks["backlog_age_s"] >= 400

    events_dispatch(now=timezone.now())  # dispatched: now two attempts are due at once
    status, body = ready(client)
    assert status == 200 and body["checks"]["webhooks"]["attempts_due"] == 2
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=301))
    status, body = ready(client)
    assert status == 503 and body["checks"]["webhooks"]["backlog_age_s"] >= 301
    # an attempt scheduled for later (a failing endpoint's retry) is not backlog
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() + timedelta(minutes=30))
    status, body = ready(client)
    assert status == 200 and body["checks"]["webhooks"]["attempts_due"] == 0


def test_details_only_for_the_clients_that_may_read_metrics(client):
    response = client.get("/readyz", REMOTE_ADDR="203.0.113.5")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def test_probes_by_ip_pass_host_validation_that_the_app_keeps(client, settings):
    settings.ALLOWED_HOSTS = ["pay.example.com"]
    for path in ("/healthz", "/readyz"):
        assert client.get(path, HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.0.0.7:8000").status_code == 200  # 127.0.0.1 is allowed
    assert client.get("/api/v1/payment-intents", HTTP_HOST="10.0.0.7:8000").status_code == 400


def test_probes_are_answered_from_a_short_cache(client, settings):
    settings.GATEWAY_READY_CACHE_S = 60
    assert ready(client)[0] == 200
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # down, but within the cache's second
    assert ready(client)[0] == 200
    settings.GATEWAY_READY_CACHE_S = 0
    assert ready(client)[0] == 503


def test_a_redis_that_accepts_and_never_answers_fails_within_the_timeout(client, settings):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # never read, never answered
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        settings.GATEWAY_READY_TIMEOUT_S = 0.5
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        started = time.monotonic()
        status, body = ready(client)
        assert status == 503 and body["checks"]["broker"]["ok"] is False
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_the_caches_redis_is_checked(client, settings):
    redis_cache = "django.core.cache.backends.redis.RedisCache"
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {"BACKEND": redis_cache, "LOCATION": REDIS_URL},
    }
    status, body = ready(client)
    assert status == 200 and body["checks"]["caches"]["caches"]["ratelimit"]["ok"]
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": redis_cache,
            "LOCATION": f"redis://:cache-secret-pw@127.0.0.1:{free_port()}/0",
        },
    }
    status, body = ready(client)
    assert status == 503 and body["checks"]["caches"]["ok"] is False
    assert "cache-secret-pw" not in str(body)


def test_deliveries_of_a_disabled_endpoint_are_not_backlog(client, settings, loopback_webhooks):
    merchant = make_merchant()
    endpoint, _ = endpoints.endpoint_create(
        merchant=merchant,
        url="http://127.0.0.1:9/hook",
        event_types=(),
        now=timezone.now() - timedelta(hours=1),
    )
    new_intent(merchant)
    events_dispatch(now=timezone.now())
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(hours=1))
    assert ready(client)[0] == 503
    type(endpoint).objects.filter(pk=endpoint.pk).update(enabled=False)
    status, body = ready(client)
    assert status == 200 and body["checks"]["webhooks"]["attempts_due"] == 0

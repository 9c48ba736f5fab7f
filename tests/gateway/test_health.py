"""`/healthz` and `/readyz` as a load balancer and an operator read them: the real database, the machine's
Redis and RabbitMQ as brokers, a closed port as a broker or database that is down."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper
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
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'payments' AND name = '0023_scan_status_success'"
        )
    status, body = ready(client)
    assert status == 503
    assert body["checks"]["migrations"] == {
        "ok": False,
        "unapplied": 1,
        "first": "payments.0023_scan_status_success",
    }


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
        (121, 0, False, "no successful scan for 121 s"),
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
    assert scan.get("problem") == problem


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

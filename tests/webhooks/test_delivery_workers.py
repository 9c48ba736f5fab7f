"""Real worker processes on PostgreSQL: two draining at once never send an attempt twice; one killed with
SIGKILL mid-attempt leaves the event delivered afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from payments.models import Event, WebhookAttempt, WebhookDelivery
from payments.webhooks import endpoints
from payments.webhooks.delivery import deliver_due, lease
from tests.factories import make_merchant
from tests.integration.test_scan_crash_and_rescan import REPO, _database_url
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db(transaction=True)


def worker(*args: str) -> subprocess.Popen:
    env = os.environ | {
        "DATABASE_URL": _database_url(),
        "GATEWAY_WEBHOOK_ALLOW_HTTP": "1",
        "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "GATEWAY_WEBHOOK_CONCURRENCY": "8",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "deliver_webhooks", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_workers_draining_at_once_never_send_an_attempt_twice(receiver):
    merchant = make_merchant()
    endpoints.endpoint_create(merchant=merchant, url=receiver.url, now=timezone.now())
    receiver.delay_s = 0.01
    workers = [worker("--idle-sleep", "0.05"), worker("--idle-sleep", "0.05")]
    try:
        for w in workers:  # both are up and polling before the events exist
            assert w.stdout.readline().startswith("delivering webhooks"), w.stderr.read()[-3000:]
        for _ in range(200):
            new_intent(merchant)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and WebhookDelivery.objects.filter(state="delivered").count() < 400:
            time.sleep(0.1)
    finally:
        for w in workers:
            w.terminate()
    outputs = [w.communicate(timeout=60) for w in workers]
    made = [sum(int(n) for n in re.findall(r"attempts (\d+)", out)) for out, _ in outputs]
    assert all(n > 0 for n in made), f"both workers should have sent some: {made}"
    assert sum(made) == 400, outputs
    counts = Counter(receiver.ids())
    assert set(counts) == set(Event.objects.values_list("id", flat=True))
    assert set(counts.values()) == {1}, "an attempt was sent twice"
    assert WebhookAttempt.objects.count() == 400
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_worker_killed_mid_delivery_leaves_the_event_delivered_afterwards(receiver):
    merchant = make_merchant()
    endpoints.endpoint_create(
        merchant=merchant, url=receiver.url, event_types=["payment.created"], now=timezone.now()
    )
    new_intent(merchant)
    receiver.gate = threading.Event()
    proc = worker()
    try:
        assert receiver.arrived.wait(60), proc.stderr.read() if proc.poll() is not None else "no request"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.gate.set()
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "pending" and delivery.claimed_at is not None and delivery.attempts == 1
    assert not WebhookAttempt.objects.exists()
    # nobody takes it while the dead worker's lease lasts; after it, the next worker does
    assert deliver_due(now=timezone.now() + timedelta(seconds=5)) == 0
    assert deliver_due(now=timezone.now() + lease() + timedelta(seconds=1)) == 1
    delivery.refresh_from_db()
    assert delivery.state == "delivered"
    assert [(a.number, a.outcome) for a in delivery.attempt_log.all()] == [(1, "lost"), (2, "succeeded")]
    event = Event.objects.get(type="payment.created")
    assert receiver.ids()[-1] == event.id

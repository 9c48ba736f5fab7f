"""The merchant guide's example receiver (examples/webhook_receiver), run as its own process: it
verifies, stores, processes idempotently, ignores stale events and catches up over the events API."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from payments import services
from payments.models import Event
from payments.webhooks import endpoints, secret_generate, signed_headers
from payments.webhooks.delivery import deliver_due, events_dispatch
from tests.factories import make_api_key, make_merchant
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db(transaction=True)
RECEIVER = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver" / "receiver.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(db: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RECEIVER), "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | env,
        check=True,
    )


@pytest.fixture
def example(tmp_path):
    """Start the example with a secret it will get from an endpoint registered by the test."""
    procs = []

    def start(secret: str, port: int) -> None:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(RECEIVER),
                "--db",
                str(tmp_path / "shop.sqlite3"),
                "serve",
                "--port",
                str(port),
            ],
            env=os.environ | {"WEBHOOK_SECRET": secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert "receiving on" in proc.stdout.readline(), proc.stderr.read()

    yield start, tmp_path / "shop.sqlite3"
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def orders(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT payment_id, state, sequence, fulfilled FROM orders").fetchall()


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def pay(intent, now):
    services.observation_record(transfer=transfer(intent), now=now)
    services.chain_tip_record(network_code="ethereum", height=100, block_hash="0xb100", now=now)
    services.observation_record(transfer=transfer(intent, **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=111, block_hash="0xb111", now=now)


def test_the_example_receiver_fulfils_once_and_ignores_stale_events(example):
    start, db = example
    merchant = make_merchant()
    port = free_port()
    _, secret = endpoints.endpoint_create(
        merchant=merchant, url=f"http://127.0.0.1:{port}/webhooks", now=timezone.now()
    )
    start(secret, port)
    intent = new_intent(merchant, merchant_order_id="order-1")
    pay(intent, timezone.now())
    assert deliver_due(now=timezone.now()) == 5
    assert wait_for(lambda: orders(db) == [(intent.id, "paid", 5, 1)]), orders(db)
    # a replay of `paid` and a late `awaiting_payment` change nothing: stored once, stale by sequence
    for event in Event.objects.filter(type__in=["payment.paid", "payment.awaiting_payment"]):
        endpoints.event_redeliver(event=event, now=timezone.now(), requested_by="test")
    assert deliver_due(now=timezone.now()) == 2
    time.sleep(0.5)
    assert orders(db) == [(intent.id, "paid", 5, 1)]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone() == (5,)
    # a forged or stale signature is refused
    body = json.dumps({"id": "evt_forged", "data": {}}).encode()
    for headers in (
        signed_headers(
            secrets=[secret_generate()], msg_id="evt_forged", timestamp=int(time.time()), body=body
        ),
        signed_headers(secrets=[secret], msg_id="evt_forged", timestamp=int(time.time()) - 3600, body=body),
        {"webhook-id": "evt_forged", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,é"},
        {"webhook-id": "evt_forged", "webhook-timestamp": "soon", "webhook-signature": "v1,x"},
        {},
    ):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks", data=body, headers=headers, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400


def test_the_example_catches_up_over_the_events_api(example, live_server):
    _, db = example
    merchant = make_merchant()
    _, api_key = make_api_key(merchant, ("payments:read",))
    intent = new_intent(merchant, merchant_order_id="order-2")
    pay(intent, timezone.now() - timedelta(seconds=1))
    events_dispatch(now=timezone.now())
    out = run(db, "catch-up", "--gateway", live_server.url, "--api-key", api_key).stdout
    assert "stored 5 missed events" in out and "processed 5" in out
    assert orders(db) == [(intent.id, "paid", 5, 1)]
    again = run(db, "catch-up", "--gateway", live_server.url, "--api-key", api_key).stdout
    assert "stored 0 missed events" in again

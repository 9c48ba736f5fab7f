"""The demo does what the README promises: its worker runs the beat's scans (on the scan queue, one task per
network, a dead node stopping nothing), and a payment on its chain (a block a second, a scan every
interval) is seen `confirming` before `paid`."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
import time
from contextlib import redirect_stdout

import pytest
from celery import Celery
from rest_framework.test import APIClient

from devchain import pay
from devchain.anvil import free_port
from gateway import demo
from gateway.celery import app
from payments.models import Network, PaymentIntent, ScanCursor, ScanStatus
from payments.tasks import scan_networks
from tests.integration.test_scan_crash_and_rescan import REPO, _database_url


@pytest.mark.django_db(transaction=True)
def test_demo_worker_runs_the_beat_scan_and_every_network_scan(anvil, tmp_path):
    Network.objects.filter(code="evm-local").update(rpc_url=anvil.url, scan_start_height=0)
    Network.objects.filter(code="ethereum").update(rpc_url=f"http://127.0.0.1:{free_port()}")  # nothing there
    broker = tmp_path / "broker"
    for sub in ("out", "processed", "control"):
        (broker / sub).mkdir(parents=True)
    env = os.environ | {
        "DATABASE_URL": _database_url(),
        "GATEWAY_STATE_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_BROKER_URL", None)  # the demo's own broker, under its state directory
    worker = subprocess.Popen(
        demo.worker_command(sys.executable),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Celery beat's part: send the tick to the broker, routed as the settings route it.
    beat = Celery(
        "beat",
        broker="filesystem://",
        broker_transport_options={
            "data_folder_in": str(broker / "out"),
            "data_folder_out": str(broker / "out"),
            "control_folder": str(broker / "control"),
        },
        task_routes=app.conf.task_routes,
    )
    try:
        beat.send_task("payments.tasks.scan_networks")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            scanned = ScanCursor.objects.filter(network__code="evm-local").exists()
            failed = ScanStatus.objects.filter(network__code="ethereum", errors_total__gte=1).exists()
            if scanned and failed:
                break
            time.sleep(0.2)
    finally:
        worker.terminate()
        try:
            output = worker.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            worker.kill()
            output = worker.communicate()[0]
    assert ScanCursor.objects.get(network__code="evm-local").height == anvil.block_number(), output[-3000:]
    assert ScanStatus.objects.get(network__code="ethereum").errors_total >= 1, output[-3000:]
    assert "scan ethereum" in output and "failed" in output


@pytest.mark.django_db
def test_demo_payment_is_seen_confirming_before_paid(tmp_path, monkeypatch, settings):
    settings.GATEWAY_RATE_SOURCE = demo.DEMO_ENV["GATEWAY_RATE_SOURCE"]
    settings.GATEWAY_FIXED_RATES = demo.DEMO_ENV["GATEWAY_FIXED_RATES"]
    interval_s = float(demo.DEMO_ENV["GATEWAY_SCAN_INTERVAL_S"])
    settings.GATEWAY_SCAN_INTERVAL_S = interval_s
    monkeypatch.setattr(demo, "DEMO_CHAIN_PORT", free_port())
    before = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True

    _, api_key, _ = demo._demo_setup(tmp_path)
    node = demo._demo_chain(tmp_path)  # anvil mining a block a second, as the demo runs it
    try:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
        answer = client.post(
            "/api/v1/payment-intents",
            {"amount": "25.00", "currency": "USD", "asset": "USDC", "network": "evm-local"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="demo-1",
        )
        assert answer.status_code == 201, answer.content
        intent_id, uri = answer.json()["id"], answer.json()["payment_uri"]
        scan_networks.delay()  # the chain so far

        printed = io.StringIO()
        with redirect_stdout(printed):
            assert pay.main([uri, "--rpc", node.url]) == 0
        block = int(re.search(r"\(block (\d+)\)", printed.getvalue())[1])
        # The latest a beat tick can come after the payment's block: one interval's worth of blocks later.
        latest_first_scan = block + math.ceil(interval_s / demo.DEMO_BLOCK_TIME_S)
        while node.block_number() < latest_first_scan:
            time.sleep(0.1)
        states = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scan_networks.delay()
            states.append(PaymentIntent.objects.get(pk=intent_id).state)
            if states[-1] == "paid":
                break
            time.sleep(interval_s)
    finally:
        node.stop()
        app.conf.task_always_eager, app.conf.task_eager_propagates = before

    intent = PaymentIntent.objects.get(pk=intent_id)
    assert states[0] == "confirming", states
    assert list(intent.transitions.order_by("id").values_list("to_state", flat=True)) == [
        "awaiting_payment",
        "confirming",
        "paid",
    ]
    events = list(intent.events.order_by("sequence").values_list("type", flat=True))
    assert events.index("payment.confirming") < events.index("payment.paid")

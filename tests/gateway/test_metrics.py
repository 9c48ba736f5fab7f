"""`/metrics` as Prometheus scrapes it: parsed with prometheus-client's own text parser, counts read before
and after real work (the API, the evidence service, deliveries to a real receiver), another process's
counts summed through the multiprocess files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from devchain.anvil import free_port
from gateway import metrics
from payments import services
from payments.models import Network, ScanStatus
from payments.webhooks import endpoints
from payments.webhooks.delivery import deliver_due
from support.models import SupportCase
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent, transfer
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-for-the-tests"


@pytest.fixture
def scrape(client, settings):
    settings.GATEWAY_METRICS_TOKEN = TOKEN

    def read() -> dict[tuple[str, tuple], float]:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=")
        samples = {}
        for family in text_string_to_metric_families(response.content.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    return read


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_off_until_an_operator_allows_a_reader(client, settings):
    assert client.get("/metrics").status_code == 404
    settings.GATEWAY_METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_allowed_networks_use_the_client_address_behind_trusted_proxies(client, settings):
    settings.GATEWAY_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 404
    # a proxy's forwarded address counts only when the proxy is trusted
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 404
    settings.GATEWAY_TRUSTED_PROXIES = ["192.0.2.7"]
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 200
    assert (
        client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 404
    )
    # a dual-stack socket reports the same proxy as ::ffff:192.0.2.7: still the proxy, not the client
    forwarded = client.get("/metrics", REMOTE_ADDR="::ffff:192.0.2.7", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert forwarded.status_code == 404
    settings.GATEWAY_METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.GATEWAY_TRUSTED_PROXIES = []
    assert client.get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200


def test_intents_created_by_state_and_create_latency(scrape, api, django_capture_on_commit_callbacks):
    before = scrape()
    body = {
        "amount": "10",
        "currency": "USDC",
        "asset": "USDC",
        "network": "ethereum",
        "merchant_order_id": "1",
    }
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/v1/payment-intents", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert response.status_code == 201
    bad = api.post("/api/v1/payment-intents", {"amount": "x"}, format="json")
    assert bad.status_code == 400
    after = scrape()
    created = "gateway_payment_intents_created_total"
    assert (
        value(after, created, network="ethereum", asset="USDC")
        - value(before, created, network="ethereum", asset="USDC")
        == 1
    )  # the replay is not a creation
    latency = "gateway_payment_intent_create_seconds_count"
    assert value(after, latency, status="201") - value(before, latency, status="201") == 2
    assert value(after, latency, status="400") - value(before, latency, status="400") == 1
    assert value(after, "gateway_payment_intents", state="awaiting_payment") == 1
    assert value(after, "gateway_metrics_database_up") == 1


def test_observations_counted_once(scrape, django_capture_on_commit_callbacks):
    intent = new_intent(make_merchant())
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):
        services.observation_record(transfer=transfer(intent, tx="0xm1"), now=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        services.observation_record(transfer=transfer(intent, tx="0xm1"), now=timezone.now())  # again
    after = scrape()
    name = "gateway_chain_observations_recorded_total"
    assert value(after, name, network="ethereum") - value(before, name, network="ethereum") == 1


def test_webhook_attempts_by_outcome_backlog_and_latency(
    scrape, loopback_webhooks, django_capture_on_commit_callbacks
):
    receiver = Receiver().start()
    try:
        receiver.answers.extend([500])
        merchant = make_merchant()
        endpoints.endpoint_create(merchant=merchant, url=receiver.url, event_types=(), now=timezone.now())
        new_intent(merchant)
        waiting = scrape()
        assert value(waiting, "gateway_webhook_backlog", kind="undispatched_events") == 2
        before = scrape()
        with django_capture_on_commit_callbacks(execute=True):
            deliver_due(now=timezone.now())
    finally:
        receiver.stop()
    after = scrape()
    name = "gateway_webhook_attempts_total"
    assert value(after, name, outcome="succeeded") - value(before, name, outcome="succeeded") == 1
    assert value(after, name, outcome="failed") - value(before, name, outcome="failed") == 1
    count = "gateway_webhook_attempt_seconds_count"
    assert value(after, count) - value(before, count) == 2
    assert value(after, "gateway_webhook_backlog", kind="undispatched_events") == 0
    assert (
        value(after, "gateway_webhook_backlog", kind="deliveries_pending") == 1
    )  # the failed one, retried later
    assert value(after, "gateway_webhook_backlog", kind="attempts_due") == 0


def test_scan_health_and_cases_from_the_database(scrape):
    network = Network.objects.get(code="ethereum")
    network.enabled, network.rpc_url = True, "http://127.0.0.1:9"
    network.save()
    success = timezone.now() - timedelta(seconds=30)
    ScanStatus.objects.create(
        network=network, last_success_at=success, lag_blocks=7, errors_total=4, errors_in_a_row=2
    )
    merchant = make_merchant()
    now = timezone.now()
    cases = [
        ("late_payment", "open"),
        ("late_payment", "in_progress"),
        ("overpaid", "open"),
        ("overpaid", "resolved"),
    ]
    for n, (kind, status) in enumerate(cases):
        SupportCase.objects.create(
            kind=kind, status=status, merchant=merchant, dedupe_key=f"m{n}", opened_at=now, due_by=now
        )
    samples = scrape()
    assert value(samples, "gateway_scan_lag_blocks", network="ethereum") == 7
    assert value(samples, "gateway_scan_errors_total", network="ethereum") == 4
    assert value(samples, "gateway_scan_errors_in_a_row", network="ethereum") == 2
    assert value(samples, "gateway_scan_last_success_timestamp_seconds", network="ethereum") == pytest.approx(
        success.timestamp()
    )
    assert value(samples, "gateway_support_cases_open", kind="late_payment") == 2
    assert value(samples, "gateway_support_cases_open", kind="overpaid") == 1
    assert ("gateway_support_cases_open", (("kind", "chain_mismatch"),)) in samples  # zero, but present


def test_another_process_counts_are_summed_and_kept_when_it_is_gone(scrape):
    assert metrics.multiprocess_dir() is not None  # the settings turn multiprocess mode on
    net, status = f"net-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"  # the archive outlives a run
    code = (
        "from gateway.metrics import OBSERVATIONS_RECORDED as c, INTENT_CREATE_SECONDS as h; "
        f"c.labels('{net}').inc(3); h.labels('{status}').observe(0.02)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    for _ in range(2):  # two processes, one after the other
        subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); " + code], check=True, env=env, timeout=60
        )
    name = "gateway_chain_observations_recorded_total"
    assert value(scrape(), name, network=net) == 6
    pid_files = len(list(metrics.multiprocess_dir().glob("*.db")))
    assert metrics.multiprocess_dir_tidy() >= 4  # both processes have ended: their files are folded
    assert len(list(metrics.multiprocess_dir().glob("*.db"))) <= pid_files - 2
    after = scrape()
    assert value(after, name, network=net) == 6  # the host's count does not go backwards
    assert value(after, "gateway_payment_intent_create_seconds_count", status=status) == 2
    assert value(after, "gateway_payment_intent_create_seconds_bucket", status=status, le="0.025") == 2
    assert metrics.multiprocess_dir_tidy() == 0  # nothing left to fold: counted once
    assert value(scrape(), name, network=net) == 6


def test_a_worker_host_serves_its_process_metrics(django_capture_on_commit_callbacks):
    """`manage.py metrics_serve` on a host without a web process: this process's counts, over HTTP."""
    metrics.OBSERVATIONS_RECORDED.labels("served-net").inc(2)
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    server = subprocess.Popen(
        [sys.executable, "manage.py", "metrics_serve", "--bind", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        text = ""
        deadline = time.monotonic() + 60  # Django's start-up on a loaded machine took more than 10 s
        while not text and time.monotonic() < deadline and server.poll() is None:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.1)
        assert text, server.stdout.read().decode() if server.poll() is not None else "no answer in 60 s"
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert value(samples, "gateway_chain_observations_recorded_total", network="served-net") >= 2
        assert "gateway_payment_intents" not in text.replace("gateway_payment_intents_created", "")
    finally:
        server.terminate()
        server.wait(10)

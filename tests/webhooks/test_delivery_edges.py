"""Edges found in review: every failure is an attempt's error, never the worker's; attempts have a
total deadline; the schedule bounds lost attempts; disable/enable keep every event; rotation and replay
limits; the transport's address fallback and Host header."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from payments.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from payments.webhooks import endpoints
from payments.webhooks.delivery import (
    _claim,
    _drain_lock,
    _record,
    _send,
    _shared,
    deliver_due,
    deliveries_drain,
    events_dispatch,
    lease,
)
from payments.webhooks.transport import Transport
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent
from tests.webhooks.test_delivery import endpoint_for

pytestmark = pytest.mark.django_db


class Exploding(Transport):
    def post(self, url, body, headers):
        raise RuntimeError("boom")


def test_an_unexpected_error_is_the_attempts_error_and_the_worker_goes_on(receiver):
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    new_intent(merchant)
    report = deliveries_drain(budget_s=5, transport=Exploding(timeout_s=1))
    assert report.attempts == 2 and report.delivered == 0
    errors = set(WebhookAttempt.objects.values_list("error", flat=True))
    assert errors == {"RuntimeError: boom"}
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"pending"}


def test_an_internationalised_host_travels_in_its_ascii_form(receiver):
    resolve = lambda host, port: ["127.0.0.1"]  # noqa: E731 (the name is not in any DNS here)
    merchant = make_merchant()
    url = f"http://bücher.example:{receiver.port}/hooks"
    endpoints.endpoint_create(
        merchant=merchant, url=url, event_types=["payment.created"], now=timezone.now(), resolve=resolve
    )
    new_intent(merchant)
    deliver_due(now=timezone.now(), transport=Transport(timeout_s=2, resolve=resolve))
    (request,) = receiver.received
    assert request.headers["host"] == f"xn--bcher-kva.example:{receiver.port}"


def test_the_next_address_is_tried_when_a_connection_fails(receiver):
    """127.0.0.3 is loopback but the receiver listens on 127.0.0.1 only: refused, then the next one."""
    resolve = lambda host, port: ["127.0.0.3", "127.0.0.1"]  # noqa: E731
    merchant = make_merchant()
    endpoints.endpoint_create(
        merchant=merchant,
        url=f"http://hooks.test:{receiver.port}/x",
        event_types=["payment.created"],
        now=timezone.now(),
        resolve=resolve,
    )
    new_intent(merchant)
    deliver_due(now=timezone.now(), transport=Transport(timeout_s=2, resolve=resolve))
    assert len(receiver.received) == 1
    assert WebhookAttempt.objects.get().outcome == "succeeded"


def test_a_refused_connection_is_named_so(receiver):
    merchant = make_merchant()
    endpoint_for(merchant, receiver, "payment.created")
    receiver.stop()
    new_intent(merchant)
    deliver_due(now=timezone.now())
    assert WebhookAttempt.objects.get().error.startswith("connection failed")


@pytest.fixture
def trickler():
    """A server that answers one byte every 0.2 s, forever (each read is quick; the whole is not)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.is_set():
                    conn.sendall(b"X")
                    time.sleep(0.2)
            except OSError:
                pass
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/slow"
    stop.set()
    server.close()


def test_an_attempt_has_a_total_deadline(trickler):
    merchant = make_merchant()
    endpoints.endpoint_create(
        merchant=merchant, url=trickler, event_types=["payment.created"], now=timezone.now()
    )
    new_intent(merchant)
    started = time.monotonic()
    deliver_due(now=timezone.now(), transport=Transport(timeout_s=1))
    assert time.monotonic() - started < 3
    attempt = WebhookAttempt.objects.get()
    assert attempt.outcome == "failed" and attempt.error.startswith("timeout")


def test_a_lost_last_attempt_is_made_again_once_more_and_a_failure_then_ends_it(receiver, settings):
    """The last scheduled attempt's worker died (it may never have sent it): a grace attempt is made;
    it fails, and that is the end (a failure that was sent gets no grace)."""
    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 5]
    merchant = make_merchant()
    endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    receiver.answers.extend([500, 500])
    t = timezone.now()
    deliver_due(now=t)  # attempt 1 fails
    events_dispatch(now=t)
    (last,) = _claim(now=t + timedelta(seconds=5), limit=5)  # attempt 2: its worker dies
    assert last.attempt == 2
    assert deliver_due(now=t + timedelta(seconds=5) + lease()) == 1  # attempt 3, the grace: fails
    assert deliver_due(now=t + timedelta(days=2)) == 0
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "failed" and delivery.attempts == 3
    assert [(a.number, a.outcome) for a in delivery.attempt_log.all()] == [
        (1, "failed"),
        (2, "lost"),
        (3, "failed"),
    ]
    assert len(receiver.received) == 2


def test_disabling_keeps_the_result_of_an_attempt_in_flight(receiver):
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    t = timezone.now()
    events_dispatch(now=t)
    (claim,) = _claim(now=t, limit=5)
    endpoints.endpoint_disable(endpoint=endpoint, reason="merchant", now=t)
    _record([(claim, _send(claim, _shared()[1]))], now=t)
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "delivered"
    assert [(a.number, a.outcome) for a in delivery.attempt_log.all()] == [(1, "succeeded")]


def test_a_failed_attempt_of_a_disabled_endpoint_pauses(receiver):
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    receiver.default_status = 500
    t = timezone.now()
    events_dispatch(now=t)
    (claim,) = _claim(now=t, limit=5)
    endpoints.endpoint_disable(endpoint=endpoint, reason="merchant", now=t)
    _record([(claim, _send(claim, _shared()[1]))], now=t)
    assert WebhookDelivery.objects.get().state == "paused"


def test_events_created_while_disabled_are_sent_when_enabled_again(receiver):
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver)
    new_intent(merchant)
    deliver_due(now=timezone.now())
    endpoints.endpoint_disable(endpoint=endpoint, reason="merchant", now=timezone.now())
    for _ in range(2):
        new_intent(merchant)
    deliver_due(now=timezone.now())
    assert len(receiver.received) == 2
    assert endpoints.endpoint_enable(endpoint=endpoint, now=timezone.now()) == 4
    deliver_due(now=timezone.now())
    assert sorted(receiver.ids()) == sorted(Event.objects.values_list("id", flat=True))


def test_a_deleted_endpoint_cannot_be_enabled_or_sent_to(receiver):
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver)
    endpoints.endpoint_delete(endpoint=endpoint, now=timezone.now())
    with pytest.raises(endpoints.NotFound):
        endpoints.endpoint_enable(endpoint=endpoint, now=timezone.now())
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=True)  # even if a row says enabled
    new_intent(merchant)
    deliver_due(now=timezone.now())
    assert receiver.received == []


def test_a_second_rotation_cuts_every_older_overlap(receiver):
    merchant = make_merchant()
    endpoint, first = endpoint_for(merchant, receiver)
    t = timezone.now()
    second = endpoints.endpoint_secret_rotate(endpoint=endpoint, overlap=timedelta(days=7), now=t)
    third = endpoints.endpoint_secret_rotate(endpoint=endpoint, overlap=timedelta(0), now=t)
    active = endpoints.secrets_active([endpoint.pk], t + timedelta(seconds=1))[endpoint.pk]
    assert active == [third]
    assert first != second


def test_a_replay_range_has_a_size_limit(receiver, monkeypatch):
    monkeypatch.setattr(endpoints, "MAX_REPLAY_EVENTS", 3)
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver)
    for _ in range(2):
        new_intent(merchant)
    with pytest.raises(endpoints.InvalidRequest) as refused:
        endpoints.endpoint_replay(
            endpoint=endpoint,
            since=timezone.now() - timedelta(hours=1),
            until=timezone.now() + timedelta(hours=1),
            now=timezone.now(),
            requested_by="test",
        )
    assert refused.value.code == "replay_too_large"
    assert not WebhookDelivery.objects.filter(kind="replay").exists()


def test_one_drain_per_process_at_a_time(receiver):
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    new_intent(merchant)
    with _drain_lock:
        assert deliveries_drain(budget_s=5).attempts == 0
    assert deliveries_drain(budget_s=5).attempts == 2

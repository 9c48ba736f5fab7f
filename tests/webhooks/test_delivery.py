"""Delivery from the outbox to a real local receiver, with the clock driven by the test (`now`)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from payments.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from payments.webhooks import endpoints
from payments.webhooks.delivery import (
    deliver_due,
    deliveries_drain,
    events_dispatch,
    lease,
    retry_schedule,
)
from payments.webhooks.transport import Transport
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db


def endpoint_for(merchant, receiver, *types, now=None):
    return endpoints.endpoint_create(
        merchant=merchant, url=receiver.url, event_types=types, now=now or timezone.now()
    )


def test_every_event_arrives_signed_verifiable_with_the_reference_library(receiver):
    merchant = make_merchant()
    _, secret = endpoint_for(merchant, receiver)
    intent = new_intent(merchant)
    assert deliver_due(now=timezone.now()) == 2
    events = {e.id: e for e in Event.objects.filter(intent=intent)}
    assert sorted(receiver.ids()) == sorted(events)
    for request in receiver.received:
        payload = Webhook(secret).verify(request.body, request.headers)
        event = events[request.headers["webhook-id"]]
        assert payload["id"] == event.id and payload["type"] == event.type
        assert payload["data"]["id"] == intent.id
        assert payload["data"]["sequence"] == event.sequence
        assert request.headers["content-type"] == "application/json"
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
    attempt = WebhookAttempt.objects.first()
    assert attempt.outcome == "succeeded" and attempt.status_code == 200
    assert attempt.response_excerpt == '{"received": true}' and attempt.latency_ms is not None


def test_a_receiver_failing_n_times_sees_n_plus_1_attempts_at_the_scheduled_times(receiver):
    merchant = make_merchant()
    endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    failures = 5
    receiver.answers.extend([500, 503, 404, 500, 502])
    schedule = retry_schedule()
    t = timezone.now()
    assert deliver_due(now=t) == 1
    expected_times = [t]
    for attempt in range(1, failures + 1):
        due = t + schedule[attempt]
        assert deliver_due(now=due - timedelta(seconds=1)) == 0, f"attempt {attempt + 1} came early"
        assert deliver_due(now=due) == 1
        t = due
        expected_times.append(due)
    assert deliver_due(now=t + timedelta(days=30)) == 0
    assert [r.status for r in receiver.received] == [500, 503, 404, 500, 502, 200]
    assert len(set(receiver.ids())) == 1, "every attempt carries the same webhook-id"
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "delivered" and delivery.attempts == failures + 1
    log = list(delivery.attempt_log.order_by("number"))
    assert [a.number for a in log] == list(range(1, failures + 2))
    assert [a.started_at for a in log] == expected_times
    assert [a.outcome for a in log] == ["failed"] * failures + ["succeeded"]
    assert log[0].error == "HTTP 500" and log[0].response_excerpt == "receiver says no"
    assert WebhookEndpoint.objects.get().failing_since is None


def test_the_schedule_runs_out_and_the_delivery_fails(receiver, settings):
    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 5, 60]
    merchant = make_merchant()
    endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    receiver.default_status = 500
    t = timezone.now()
    for offset in (0, 5, 65, 3600, 86400):
        deliver_due(now=t + timedelta(seconds=offset))
    assert len(receiver.received) == 3
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "failed" and delivery.next_attempt_at is None


def test_410_gone_disables_the_endpoint_and_pauses_its_other_deliveries(receiver):
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver)
    new_intent(merchant)
    receiver.answers.append(410)
    deliver_due(now=timezone.now(), limit=1)
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason == "gone"
    states = sorted(WebhookDelivery.objects.values_list("state", flat=True))
    assert states == ["failed", "paused"]
    assert len(receiver.received) == 1
    # enabling it again resumes what was paused
    endpoints.endpoint_enable(endpoint=endpoint, now=timezone.now())
    deliver_due(now=timezone.now())
    assert sorted(WebhookDelivery.objects.values_list("state", flat=True)) == ["delivered", "failed"]


def test_an_endpoint_failing_for_days_is_disabled_and_flagged(receiver, settings):
    settings.GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS = 24
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver)
    receiver.default_status = 500
    t = timezone.now()
    new_intent(merchant)
    deliver_due(now=t)
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since == t
    for hours in (1, 12, 23):
        deliver_due(now=t + timedelta(hours=hours))
    endpoint.refresh_from_db()
    assert endpoint.enabled
    deliver_due(now=t + timedelta(hours=25))
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason == "failing"
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"paused"}


def test_a_receiver_down_for_a_while_gets_everything_after_it_returns(receiver):
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    receiver.stop()
    for _ in range(5):
        new_intent(merchant)
    t = timezone.now()
    assert deliver_due(now=t) == 10
    failed = WebhookAttempt.objects.filter(outcome="failed")
    assert failed.count() == 10 and all("connection" in a.error.lower() for a in failed)
    receiver.start()  # same port
    assert deliver_due(now=t + timedelta(seconds=5)) == 10
    assert sorted(receiver.ids()) == sorted(Event.objects.values_list("id", flat=True))
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_replay_keeps_the_webhook_id(receiver):
    merchant = make_merchant()
    _, secret = endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    deliver_due(now=timezone.now())
    event = Event.objects.get(type="payment.created")
    endpoints.event_redeliver(event=event, now=timezone.now(), requested_by="test")
    deliver_due(now=timezone.now())
    assert receiver.ids() == [event.id, event.id]
    for request in receiver.received:
        Webhook(secret).verify(request.body, request.headers)
    kinds = sorted(WebhookDelivery.objects.values_list("kind", "requested_by"))
    assert kinds == [("original", ""), ("replay", "test")]


def test_bulk_replay_of_a_time_range(receiver):
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver, "payment.created")
    intents = [new_intent(merchant) for _ in range(4)]
    deliver_due(now=timezone.now())
    created = {i.id: Event.objects.get(intent=i, type="payment.created").created_at for i in intents}
    since, until = created[intents[1].id], created[intents[3].id]
    queued = endpoints.endpoint_replay(
        endpoint=endpoint, since=since, until=until, now=timezone.now(), requested_by="admin:alice"
    )
    assert queued == 2
    deliver_due(now=timezone.now())
    replayed = sorted(r.event["data"]["id"] for r in receiver.received[4:])
    assert replayed == sorted([intents[1].id, intents[2].id])


def test_rotation_sends_both_signatures_during_the_overlap(receiver):
    merchant = make_merchant()
    endpoint, old = endpoint_for(merchant, receiver, "payment.created")
    t = timezone.now()
    new = endpoints.endpoint_secret_rotate(endpoint=endpoint, overlap=timedelta(hours=1), now=t)
    new_intent(merchant)
    deliver_due(now=t + timedelta(minutes=30))
    request = receiver.received[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)
    # after the overlap only the new secret signs
    event = Event.objects.get(type="payment.created")
    endpoints.event_redeliver(event=event, now=t + timedelta(hours=2), requested_by="test")
    deliver_due(now=t + timedelta(hours=2))
    request = receiver.received[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(request.body, request.headers)


def test_dispatch_follows_the_type_filter_and_skips_disabled_and_later_endpoints(receiver):
    merchant = make_merchant()
    everything, _ = endpoint_for(merchant, receiver)
    only_paid, _ = endpoint_for(merchant, receiver, "payment.paid")
    off, _ = endpoint_for(merchant, receiver)
    endpoints.endpoint_disable(endpoint=off, reason="merchant", now=timezone.now())
    other_merchant = make_merchant("Other", account=1)
    endpoint_for(other_merchant, receiver)
    new_intent(merchant)
    late, _ = endpoint_for(merchant, receiver)  # created after the events
    assert events_dispatch(now=timezone.now()) == 2
    assert events_dispatch(now=timezone.now()) == 0
    assert WebhookDelivery.objects.filter(endpoint=everything).count() == 2
    for endpoint in (only_paid, off, late):
        assert not WebhookDelivery.objects.filter(endpoint=endpoint).exists()
    positions = list(Event.objects.order_by("position").values_list("type", "position"))
    assert positions == [("payment.created", 1), ("payment.awaiting_payment", 2)]


def test_a_result_after_the_lease_was_taken_over_changes_nothing(receiver):
    """A worker that outlived its lease: the attempt is made again by another; the late result of the
    first is dropped, and the log says the first attempt's result is unknown."""
    from payments.webhooks.delivery import _claim, _record, _send, _shared

    merchant = make_merchant()
    endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    t = timezone.now()
    events_dispatch(now=t)
    (slow,) = _claim(now=t, limit=10)
    assert _claim(now=t + lease() - timedelta(seconds=1), limit=10) == []
    (second,) = _claim(now=t + lease(), limit=10)
    assert second.attempt == 2 and second.lost_attempt_started == t
    transport = _shared()[1]
    _record([(second, _send(second, transport))], now=t + lease())
    _record([(slow, _send(slow, transport))], now=t + lease())
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "delivered" and delivery.attempts == 2
    assert [(a.number, a.outcome) for a in delivery.attempt_log.all()] == [(1, "lost"), (2, "succeeded")]


def test_a_slow_endpoint_holds_back_only_its_own_attempts(receiver, settings):
    """The drain keeps sending to a fast endpoint while another one's attempt waits for its timeout."""
    from tests.webhooks.receiver import Receiver

    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 3600]  # one attempt each within this drain
    slow = Receiver(gate=threading.Event()).start()
    try:
        merchant = make_merchant()
        endpoints.endpoint_create(merchant=merchant, url=slow.url, now=timezone.now())
        endpoints.endpoint_create(merchant=merchant, url=receiver.url, now=timezone.now())
        for _ in range(10):
            new_intent(merchant)
        started = time.time()
        report = deliveries_drain(budget_s=30, transport=Transport(timeout_s=1.5))
    finally:
        slow.gate.set()
        slow.stop()
    assert len(receiver.received) == 20
    assert max(r.at for r in receiver.received) - started < 1.0, "the fast endpoint waited for the slow one"
    slow_attempts = WebhookAttempt.objects.filter(delivery__endpoint__url=slow.url)
    assert slow_attempts.count() == 20 and all("timeout" in a.error for a in slow_attempts)
    assert report.delivered == 20 and report.attempts == 40


def test_the_celery_task_dispatches_and_delivers(receiver, settings):
    from payments.tasks import deliver_webhooks

    settings.GATEWAY_WEBHOOK_DRAIN_S = 5
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    new_intent(merchant)
    result = deliver_webhooks.apply().get()
    assert result == {"dispatched": 2, "attempts": 2, "delivered": 2}
    assert len(receiver.received) == 2
    assert "deliver-webhooks" in settings.CELERY_BEAT_SCHEDULE

"""The drain's claims ahead and batched records: claims not sent are released as if never taken (lease
run short while queued, endpoint disabled, drain over), results are all recorded when the drain stops,
and the per-endpoint cap bounds attempts in flight however many claims are queued."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from payments.models import Merchant, WebhookAttempt, WebhookDelivery
from payments.webhooks import endpoints
from payments.webhooks.claims import LOST_GRACE, Claim, claims_release, claims_take, lease
from payments.webhooks.delivery import _send, _shared, deliver_due, deliveries_drain, events_dispatch
from payments.webhooks.pipeline import Pipeline
from payments.webhooks.recorder import results_record
from payments.webhooks.transport import Result
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent
from tests.webhooks.test_delivery import endpoint_for

pytestmark = pytest.mark.django_db


def one_delivery_due(receiver):
    """One merchant, one endpoint for `payment.created`, one intent: one delivery due at the time returned."""
    merchant = make_merchant()
    endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    t = timezone.now()
    events_dispatch(now=t)
    return t


def run(pipeline: Pipeline, threads: int = 4) -> None:
    """Let `threads` senders work through what is queued, then stop them."""
    senders = [threading.Thread(target=pipeline.serve) for _ in range(threads)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 10
    while pipeline.held() and time.monotonic() < deadline:
        time.sleep(0.01)
    pipeline.close()
    for sender in senders:
        sender.join(10)


def test_a_claim_whose_lease_runs_short_while_queued_is_released_unsent(receiver):
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    new_intent(merchant)
    t = timezone.now()
    events_dispatch(now=t)
    claims = claims_take(now=t, limit=10)
    assert len(claims) == 2
    # the senders get to them when less than an attempt's time is left of their lease
    late = t + lease() - timedelta(seconds=2)
    pipeline = Pipeline(
        cap=4, send=lambda c: _send(c, _shared()[1]), clock=lambda: late, attempt_s=10, rates={}
    )
    pipeline.add(claims)
    run(pipeline)
    results, expired = pipeline.take_done()
    assert results == [] and sorted(c.delivery_id for c in expired) == sorted(c.delivery_id for c in claims)
    assert receiver.received == []
    assert claims_release(expired) == 2
    for delivery in WebhookDelivery.objects.all():  # as before the claim: due at once, no attempt counted
        assert (delivery.state, delivery.attempts, delivery.claimed_at) == ("pending", 0, None)
        assert delivery.next_attempt_at == t
    assert deliver_due(now=late) == 2
    assert len(receiver.received) == 2
    numbers = sorted(WebhookAttempt.objects.values_list("number", "outcome"))
    assert numbers == [(1, "succeeded"), (1, "succeeded")], "no lost attempt: nothing was sent"


def test_a_release_after_another_worker_took_the_delivery_over_changes_nothing(receiver):
    t = one_delivery_due(receiver)
    (first,) = claims_take(now=t, limit=10)
    (second,) = claims_take(now=t + lease(), limit=10)  # the first lease ended: another worker's now
    assert claims_release([first]) == 0
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts == 2 and delivery.claimed_at == t + lease()
    assert claims_release([second]) == 1
    delivery.refresh_from_db()  # back to after the first claim, whose attempt is still lost
    assert (delivery.attempts, delivery.claimed_at, delivery.next_attempt_at) == (1, t, t + lease())


def test_queued_claims_of_a_disabled_endpoint_are_released_paused(receiver):
    merchant = make_merchant()
    endpoint, _ = endpoint_for(merchant, receiver)
    new_intent(merchant)
    t = timezone.now()
    events_dispatch(now=t)
    claims = claims_take(now=t, limit=10)
    endpoints.endpoint_disable(endpoint=endpoint, reason="merchant", now=t)
    assert claims_release(claims) == 2
    assert set(WebhookDelivery.objects.values_list("state", "attempts")) == {("paused", 0)}
    endpoints.endpoint_enable(endpoint=endpoint, now=t)
    assert deliver_due(now=t) == 2
    assert set(WebhookDelivery.objects.values_list("state", "attempts")) == {("delivered", 1)}


def test_the_cap_bounds_attempts_in_flight_not_claims_queued(receiver):
    """Twenty claims queued for one endpoint, sixteen senders: never more than `cap` at once."""
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    for _ in range(10):
        new_intent(merchant)
    t = timezone.now()
    events_dispatch(now=t)
    claims = claims_take(now=t, limit=100, wants={endpoints.WebhookEndpoint.objects.get().pk: 50})
    assert len(claims) == 20
    sender = CountingSender(0.02)
    pipeline = Pipeline(cap=3, send=sender.send, clock=lambda: t, attempt_s=10, rates={})
    pipeline.add(claims)
    run(pipeline, threads=16)
    results, expired = pipeline.take_done()
    assert len(results) == 20 and expired == []
    assert sender.most == 3


class CountingSender:
    """Sends in `seconds`, counting the attempts in flight at once."""

    def __init__(self, seconds: float):
        self.seconds, self.lock, self.busy, self.most = seconds, threading.Lock(), 0, 0

    def send(self, claim) -> Result:
        with self.lock:
            self.busy += 1
            self.most = max(self.most, self.busy)
        time.sleep(self.seconds)
        with self.lock:
            self.busy -= 1
        return Result(200, round(self.seconds * 1000))


class CountingCondition(type(threading.Condition())):
    """A Condition that counts the sleeping senders it is asked to wake."""

    notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def test_a_sender_that_finishes_takes_the_next_claim_itself_without_waking_another():
    """One endpoint, cap 2, sixteen senders, 200 claims: the two slots are kept full by the threads that
    free them. Waking an idle sender for every finished attempt (to find nothing and sleep again) cost a
    context switch and the GIL per delivery: with one endpoint, a quarter of the worker's rate."""
    t = timezone.now()
    sender = CountingSender(0.002)
    pipeline = Pipeline(cap=2, send=sender.send, clock=lambda: t, attempt_s=10, rates={})
    pipeline._cond = CountingCondition()
    pipeline.add([queued_claim(i, t) for i in range(200)])
    run(pipeline, threads=16)
    results, expired = pipeline.take_done()
    assert len(results) == 200 and expired == [] and sender.most == 2
    wakes = pipeline._cond.notified - 1  # `close` wakes every sender (one notify_all) to let them end
    assert wakes < 200 // 4, f"{wakes} senders woken for 200 attempts"


def test_a_slowing_endpoint_gives_back_the_claims_it_will_not_send_soon():
    pipeline = Pipeline(cap=2, send=lambda c: Result(200, 1), clock=timezone.now, attempt_s=10, rates={})
    t = timezone.now()
    pipeline.add([queued_claim(i, t) for i in range(40)])  # queued while it was fast; none done since
    pipeline.wants()
    _, expired = pipeline.take_done()
    assert len(expired) == 40 - 4 and pipeline.held() == 4  # 2 x cap kept
    assert {c.delivery_id for c in expired} == set(range(4, 40)), "the newest go back"


def queued_claim(i: int, t) -> Claim:
    return Claim(
        delivery_id=i,
        attempt=1,
        url="http://127.0.0.1:9/x",
        endpoint_id="we_slow",
        msg_id=f"evt_{i}",
        body=b"{}",
        secrets=[],
        lost_attempt_started=None,
        claimed_at=t,
        lease_end=t + lease(),
    )


def test_a_drain_that_runs_out_of_time_records_every_attempt_made_and_releases_the_rest(receiver, settings):
    settings.GATEWAY_WEBHOOK_PER_ENDPOINT = 2
    receiver.delay_s = 0.05
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    for _ in range(40):
        new_intent(merchant)
    report = deliveries_drain(budget_s=0.5)
    sent = len(receiver.received)
    assert 0 < report.attempts == sent < 80
    assert WebhookAttempt.objects.count() == sent, "every attempt made is recorded"
    assert WebhookDelivery.objects.filter(state="delivered").count() == sent
    left = WebhookDelivery.objects.exclude(state="delivered")
    assert left.count() == 80 - sent
    assert set(left.values_list("state", "attempts")) == {("pending", 0)}, "the queued ones were released"
    assert not left.filter(claimed_at__isnull=False).exists()
    # the next drain sends them, each once
    deliveries_drain(budget_s=30)
    assert len(receiver.received) == 80 and len(set(receiver.ids())) == 80


def test_a_queued_claim_is_sent_with_the_endpoints_url_and_secrets_as_last_read():
    """Claims queued before a URL change or a zero-overlap rotation are not sent as they were claimed."""
    t = timezone.now()
    sent: list[tuple[str, list[str]]] = []

    def send(claim):
        sent.append((claim.url, claim.secrets))
        return Result(200, 1)

    pipeline = Pipeline(cap=2, send=send, clock=lambda: t, attempt_s=10, rates={})
    pipeline.add([queued_claim(i, t) for i in range(3)])  # claimed with the old URL, no secret
    pipeline.endpoints_set({"we_slow": ("http://127.0.0.1:9/new", ["whsec_new"])})
    run(pipeline)
    assert sent == [("http://127.0.0.1:9/new", ["whsec_new"])] * 3


def test_a_delivery_whose_last_attempts_were_lost_gets_a_grace_attempt_then_fails(receiver, settings):
    """A claim counts its attempt before it is sent: a worker killed with it queued loses an attempt it
    may never have made. The last scheduled attempt lost that way is not the end: LOST_GRACE more, each
    logged lost if lost again, then the delivery fails."""
    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 5]
    t = one_delivery_due(receiver)
    for n in range(1, 2 + LOST_GRACE + 1):  # each claim's worker dies before it records anything
        (claim,) = claims_take(now=t + n * lease(), limit=10)
        assert claim.attempt == n
    assert claims_take(now=t + 10 * lease(), limit=10) == []
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("failed", 2 + LOST_GRACE)
    assert list(WebhookAttempt.objects.order_by("number").values_list("number", "outcome")) == [
        (n, "lost") for n in range(1, 2 + LOST_GRACE + 1)
    ]
    assert receiver.received == []


def test_a_grace_attempt_that_gets_through_delivers(receiver, settings):
    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 5]
    t = one_delivery_due(receiver)
    claims_take(now=t, limit=10)  # attempt 1: lost
    claims_take(now=t + lease(), limit=10)  # attempt 2, the schedule's last: lost
    assert deliver_due(now=t + 2 * lease()) == 1  # the grace attempt, sent
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("delivered", 3)
    assert list(WebhookAttempt.objects.order_by("number").values_list("number", "outcome")) == [
        (1, "lost"),
        (2, "lost"),
        (3, "succeeded"),
    ]
    assert len(receiver.received) == 1


def test_a_failed_last_attempt_that_was_sent_gets_no_grace(receiver, settings):
    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 5]
    receiver.default_status = 500
    merchant = make_merchant()
    endpoint_for(merchant, receiver, "payment.created")
    new_intent(merchant)
    t = timezone.now()
    assert deliver_due(now=t) == 1
    assert deliver_due(now=t + timedelta(seconds=5)) == 1
    assert deliver_due(now=t + timedelta(days=1)) == 0
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("failed", 2)
    assert len(receiver.received) == 2


def test_a_late_result_after_a_released_takeover_keeps_its_real_attempt_row(receiver):
    t = one_delivery_due(receiver)
    (w1,) = claims_take(now=t, limit=10)  # worker 1: attempt 1, sent; its drain is stuck in an outage
    (w2,) = claims_take(now=t + lease(), limit=10)  # lease over: worker 2 takes over, logs attempt 1 lost
    assert claims_release([w2]) == 1  # worker 2's drain ends before sending it: given back
    # worker 1's database comes back; it writes the result it kept (the merchant answered 200)
    w1.started_at = t
    recorded = results_record([(w1, Result(200, 12, excerpt='{"ok":true}'))], now=t + lease())
    assert recorded.applied == {w1.delivery_id}, "the result is applied (the delivery is delivered)"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    log = list(WebhookAttempt.objects.values_list("number", "outcome", "status_code"))
    # the merchant's delivery log should show the 200 it answered, not "the worker stopped"
    assert log == [(1, "succeeded", 200)], f"attempt log of a delivered delivery: {log}"


def test_a_lost_attempt_is_logged_and_counted_once_across_claim_release_claim(
    receiver, settings, django_capture_on_commit_callbacks
):
    """(checked fine) claim -> release -> claim -> release -> record: one lost row, one `lost` count."""
    from gateway.metrics import WEBHOOK_ATTEMPTS

    def lost_count():
        return WEBHOOK_ATTEMPTS.labels("lost")._value.get()

    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 5]
    t = one_delivery_due(receiver)
    before = lost_count()
    # inside the test's transaction, the counters' on-commit callbacks run as a commit would run them
    with django_capture_on_commit_callbacks(execute=True):
        claims_take(now=t, limit=10)  # attempt 1: its worker dies
        for i in (1, 2):
            (c,) = claims_take(now=t + i * lease(), limit=10)
            assert c.attempt == 2 and claims_release([c]) == 1
        (c,) = claims_take(now=t + 3 * lease(), limit=10)
        c.started_at = c.claimed_at
        results_record([(c, Result(500, 3, error="HTTP 500"))], now=t + 3 * lease())
    # the schedule's last attempt was sent and failed: failed, no grace
    d = WebhookDelivery.objects.get()
    assert (d.state, d.attempts) == ("failed", 2)
    rows = list(WebhookAttempt.objects.order_by("number").values_list("number", "outcome"))
    assert rows == [(1, "lost"), (2, "failed")]
    assert lost_count() - before == 1


def test_deliver_due_goes_on_past_a_delivery_that_fails_in_the_claim(receiver, settings):
    settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [0, 5]
    settings.GATEWAY_WEBHOOK_PER_ENDPOINT = 1
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    new_intent(merchant)  # two events: two deliveries
    t = timezone.now()
    events_dispatch(now=t)
    first, second = WebhookDelivery.objects.order_by("id")
    # the first: its grace attempts all lost with their workers; due (lease over) before the second
    WebhookDelivery.objects.filter(pk=first.pk).update(
        attempts=2 + LOST_GRACE, claimed_at=t - timedelta(hours=1), next_attempt_at=t - timedelta(minutes=1)
    )
    made = deliver_due(now=t)
    second.refresh_from_db()
    first.refresh_from_db()
    assert first.state == "failed"
    assert (made, second.state) == (1, "delivered"), f"deliver_due made {made}; the second is {second.state}"


def test_a_lost_attempt_whose_answer_arrives_after_all_is_counted_as_answered(
    receiver, django_capture_on_commit_callbacks
):
    """The attempt is counted `lost` when the takeover logs it, and `succeeded` when its result replaces
    that row: gateway_webhook_lost_attempts_answered says so, so lost minus answered is the lost attempts
    whose answer was never recorded (a dashboard reading `lost` alone saw a delivered webhook as lost). A
    result written as a new attempt row is not counted there."""
    from gateway.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_LOST_ANSWERED

    def moved():
        now = (
            WEBHOOK_ATTEMPTS.labels("lost")._value.get(),
            WEBHOOK_ATTEMPTS.labels("succeeded")._value.get(),
            WEBHOOK_LOST_ANSWERED._value.get(),
        )
        return [a - b for a, b in zip(now, before, strict=True)]

    t = one_delivery_due(receiver)
    new_intent(Merchant.objects.get())  # a second delivery to the same endpoint
    events_dispatch(now=t)
    before = (
        WEBHOOK_ATTEMPTS.labels("lost")._value.get(),
        WEBHOOK_ATTEMPTS.labels("succeeded")._value.get(),
        WEBHOOK_LOST_ANSWERED._value.get(),
    )
    first, second = sorted(claims_take(now=t, limit=10), key=lambda c: c.delivery_id)
    second.started_at = t
    # inside the test's transaction: each step's on-commit callbacks run as its commit would run them
    with django_capture_on_commit_callbacks(execute=True):
        results_record([(second, Result(200, 5))], now=t)  # in its lease: a new attempt row
    assert moved() == [0, 1, 0]
    with django_capture_on_commit_callbacks(execute=True):
        (takeover,) = claims_take(now=t + lease(), limit=10)  # logs the first's attempt 1 lost
        assert takeover.delivery_id == first.delivery_id and claims_release([takeover]) == 1
    assert moved() == [1, 1, 0]
    first.started_at = t
    with django_capture_on_commit_callbacks(execute=True):
        results_record([(first, Result(200, 12))], now=t + lease())  # its answer arrives after all
    assert moved() == [1, 2, 1]

"""Decisions as evidence: each is checked against the payment as it is now, recorded with its actor, role
and reason, and the state follows from evaluating the new evidence, in one transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments import services
from payments.errors import Conflict, InvalidRequest
from payments.models import Event, PaymentIntent, Resolution
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db

REASON = "The customer sent the rest by bank transfer, confirmed by finance."


def record(intent, kind, **kw):
    base = {
        "intent_id": intent.pk,
        "kind": kind,
        "actor": kw.pop("actor", None),
        "role": "support_lead",
        "reason": REASON,
        "now": timezone.now(),
    }
    return services.resolution_record(**(base | kw))


def fresh(intent) -> PaymentIntent:
    return PaymentIntent.objects.get(pk=intent.pk)


def confirmed(intent, tx, amount, now, height=100):
    services.observation_record(
        transfer=transfer(intent, tx=tx, amount=amount, **block(height, now)), now=now
    )
    services.chain_tip_record(network_code="ethereum", height=height + 20, block_hash="0xtip", now=now)


@pytest.mark.parametrize("reason", ["", "   ", "ok", "because I said so", "x" * 40])
def test_a_reason_is_at_least_a_sentence(reason):
    intent = new_intent()
    with pytest.raises(InvalidRequest) as raised:
        record(intent, "mark_paid", reason=reason)
    assert raised.value.code == "reason_required"
    assert not Resolution.objects.exists()


def test_mark_paid_is_evidence_and_the_state_follows_with_an_event():
    actor = make_staff(username="lead")
    intent = new_intent()
    (made,) = record(intent, "mark_paid", actor=actor)
    intent = fresh(intent)
    assert intent.state == "paid"
    assert (made.actor, made.role, made.reason) == (actor, "support_lead", REASON)
    transition = intent.transitions.order_by("-id").first()
    assert (transition.to_state, transition.reason) == ("paid", "marked paid by an authorised person")
    assert intent.events.filter(type="payment.paid").count() == 1
    with pytest.raises(Conflict) as raised:
        record(intent, "mark_paid")
    assert raised.value.code == "resolution_not_applicable"


def test_accept_underpayment_only_when_underpaid():
    now = timezone.now()
    intent = new_intent(amount="10", now=now)
    with pytest.raises(Conflict):
        record(intent, "accept_underpayment")
    confirmed(intent, "0xa1", 4_000_000, now)  # 4 of 10 USDC
    assert fresh(intent).state == "underpaid"
    record(intent, "accept_underpayment")
    assert fresh(intent).state == "paid"


def test_accept_a_late_payment_by_its_transaction():
    now = timezone.now()
    intent = new_intent(now=now - timedelta(hours=2))  # 15 min window: closed an hour and a half ago
    services.expire_due_intents(now=now)
    assert fresh(intent).state == "expired"
    late = services.observation_record(transfer=transfer(intent, tx="0xlate", **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=120, block_hash="0xtip", now=now)
    assert fresh(intent).flags == ["late_payment"]
    made = record(intent, "accept_late_payment", observation_id=late.pk)
    assert [r.observation_id for r in made] == [late.pk]
    assert fresh(intent).state == "paid"
    with pytest.raises(Conflict):  # counted now: not late any more
        record(intent, "accept_late_payment", observation_id=late.pk)


def test_late_acceptance_refuses_an_output_of_another_payment():
    now = timezone.now()
    merchant = make_merchant()
    intent, other = new_intent(merchant, now=now), new_intent(merchant, now=now)
    theirs = services.observation_record(transfer=transfer(other, tx="0xother"), now=now)
    with pytest.raises(Exception) as raised:
        record(intent, "accept_late_payment", observation_id=theirs.pk)
    assert raised.value.code == "observation_not_found"


def test_cancel_only_without_funds_and_later_funds_are_late():
    now = timezone.now()
    intent = new_intent(now=now)
    record(intent, "cancel", now=now)
    intent = fresh(intent)
    assert intent.state == "expired"
    assert intent.resolutions.get().until == now
    services.observation_record(transfer=transfer(intent, tx="0xafter"), now=now + timedelta(seconds=5))
    assert fresh(intent).flags == ["late_payment"] and fresh(intent).state == "expired"

    funded = new_intent(intent.merchant, now=now)
    services.observation_record(transfer=transfer(funded, tx="0xseen", amount=1), now=now)
    with pytest.raises(Conflict):
        record(funded, "cancel", now=now)


def test_extend_deadline_lets_a_top_up_count_and_tells_the_merchant():
    now = timezone.now()
    intent = new_intent(amount="10", now=now - timedelta(hours=1))
    confirmed(intent, "0xpart", 6_000_000, now - timedelta(minutes=50))
    assert fresh(intent).state == "underpaid"
    with pytest.raises(InvalidRequest) as raised:  # a deadline in the past
        record(intent, "extend_deadline", until=now - timedelta(minutes=1), now=now)
    assert raised.value.code == "deadline_not_later"
    with pytest.raises(InvalidRequest) as raised:
        record(intent, "extend_deadline", until=now + timedelta(days=31), now=now)
    assert raised.value.code == "deadline_too_far"

    record(intent, "extend_deadline", until=now + timedelta(hours=24), now=now)
    event = Event.objects.get(intent=intent, type="payment.top_up_requested")
    assert event.payload["amount_remaining"]["base_units"] == "4000000"  # 10 USDC due, 6 paid
    # the top-up arrives an hour after the original window closed: on time under the new deadline
    confirmed(intent, "0xtopup", 4_000_000, now + timedelta(minutes=5), height=101)
    intent = fresh(intent)
    assert intent.state == "paid" and intent.flags == []


def test_the_database_refuses_a_decision_without_its_facts():
    intent = new_intent()
    merchant_user = make_staff(username="someone")
    for row in (
        {"kind": "mark_paid", "reason": ""},
        {"kind": "extend_deadline", "reason": REASON},
        {"kind": "cancel", "reason": REASON},
        {"kind": "accept_late_payment", "reason": REASON},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            Resolution.objects.create(intent=intent, actor=merchant_user, **row)


def test_other_merchants_intents_are_untouched():
    intent = new_intent(make_merchant("A"))
    other = new_intent(make_merchant("B", account=1))
    record(intent, "mark_paid")
    assert fresh(other).state == "awaiting_payment"


def test_a_reason_longer_than_people_read_is_refused():
    intent = new_intent()
    with pytest.raises(InvalidRequest) as raised:
        record(intent, "mark_paid", reason="word " * 1000)  # 5000 characters
    assert raised.value.code == "reason_too_long" and not Resolution.objects.exists()

"""Recording evidence and settling state: transitions and events, written once, in one transaction."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from payments import services
from payments.chains.base import Transfer
from payments.models import ChainObservation, Event, NetworkAsset, PaymentIntent, StateTransition
from tests.factories import make_merchant

pytestmark = pytest.mark.django_db

USDC_ETH = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"


def new_intent(
    merchant=None, *, asset="USDC", network="ethereum", amount="10", now=None, **kw
) -> PaymentIntent:
    merchant = merchant or make_merchant()
    na = NetworkAsset.objects.select_related("asset", "network").get(asset__code=asset, network__code=network)
    data = services.IntentInput(price_amount=Decimal(amount), price_currency=asset, network_asset=na, **kw)
    return services.payment_intent_create(merchant=merchant, data=data, now=now or timezone.now())


def transfer(intent: PaymentIntent, tx="0xaa", amount=10_000_000, **kw) -> Transfer:
    base = {
        "network_code": "ethereum",
        "tx_hash": tx,
        "output_index": 0,
        "address": intent.address.address,
        "amount_base_units": amount,
        "token_contract": USDC_ETH,
    }
    return Transfer(**(base | kw))


def states(intent: PaymentIntent) -> list[tuple[str, str]]:
    return list(intent.transitions.order_by("id").values_list("from_state", "to_state"))


def event_types(intent: PaymentIntent) -> list[str]:
    return list(intent.events.order_by("sequence").values_list("type", flat=True))


def block(height: int, now):
    return {"block_height": height, "block_hash": f"0xb{height}", "block_time": now, "position_in_block": 0}


def test_exact_payment_detected_confirming_paid_with_events():
    now = timezone.now()
    intent = new_intent(now=now)
    services.observation_record(transfer=transfer(intent), now=now)
    services.chain_tip_record(network_code="ethereum", height=100, block_hash="0xb100", now=now)
    services.observation_record(transfer=transfer(intent, **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=111, block_hash="0xb111", now=now)
    services.chain_tip_record(network_code="ethereum", height=112, block_hash="0xb112", now=now)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert states(intent) == [
        ("created", "awaiting_payment"),
        ("awaiting_payment", "detected"),
        ("detected", "confirming"),
        ("confirming", "paid"),
    ]
    assert event_types(intent) == [
        "payment.created",
        "payment.awaiting_payment",
        "payment.detected",
        "payment.confirming",
        "payment.paid",
    ]
    assert list(intent.events.order_by("sequence").values_list("sequence", flat=True)) == [1, 2, 3, 4, 5]
    paid_event = intent.events.get(type="payment.paid")
    assert paid_event.payload["state"] == "paid"
    assert paid_event.payload["amount_confirmed"]["base_units"] == "10000000"
    assert paid_event.payload["sequence"] == 5
    (tx,) = paid_event.payload["transactions"]
    assert tx["tx_hash"] == "0xaa" and tx["amount"] == {"value": "10.000000", "base_units": "10000000"}
    assert tx["block_height"] == 100 and tx["confirmations"] == 12 and tx["canonical"] is True
    detected = intent.events.get(type="payment.detected").payload["transactions"]
    assert detected[0]["confirmations"] == 0 and detected[0]["block_height"] is None
    assert int(intent.amount_confirmed_base_units) == 10_000_000


def test_recording_the_same_observation_twice_changes_nothing():
    now = timezone.now()
    intent = new_intent(now=now)
    services.chain_tip_record(network_code="ethereum", height=120, block_hash="0xb120", now=now)
    for _ in range(3):
        services.observation_record(transfer=transfer(intent, **block(100, now)), now=now)
    assert ChainObservation.objects.count() == 1
    assert states(intent) == [("created", "awaiting_payment"), ("awaiting_payment", "paid")]
    assert Event.objects.filter(intent=intent).count() == 3


def test_transfer_to_unknown_address_is_ignored():
    intent = new_intent()
    result = services.observation_record(
        transfer=transfer(intent, address="0x000000000000000000000000000000000000dead"), now=timezone.now()
    )
    assert result is None and ChainObservation.objects.count() == 0


def test_late_payment_opens_review_and_keeps_state():
    created = timezone.now() - timedelta(hours=1)
    intent = new_intent(now=created)
    now = timezone.now()
    assert services.expire_due_intents(now=now) == 1
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
    services.observation_record(transfer=transfer(intent, **block(150, now)), now=now)
    services.observation_record(transfer=transfer(intent, **block(150, now)), now=now)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "expired"
    assert intent.flags == ["late_payment"]
    assert event_types(intent)[-2:] == ["payment.expired", "payment.late_payment_detected"]
    assert intent.events.filter(type="payment.late_payment_detected").count() == 1


def test_wrong_network_funds_are_flagged_not_counted():
    now = timezone.now()
    intent = new_intent(now=now)
    services.observation_record(
        transfer=transfer(
            intent,
            network_code="polygon",
            token_contract="0x3c499c542cef5e3811e1192ce70d8cc03d5c3359",
            **block(5, now),
        ),
        now=now,
    )
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "awaiting_payment"
    assert intent.flags == ["wrong_network"]
    assert "payment.wrong_network_detected" in event_types(intent)


def test_verify_payments_counts_a_window_closed_since_the_last_sweep_as_due_not_as_a_difference(capsys):
    """Past the deadline and not yet swept, an intent is due: to expire, or to fail when only funds of
    the wrong asset or network arrived. Neither is a difference."""
    then = timezone.now() - timedelta(hours=2)
    merchant = make_merchant()
    plain = new_intent(merchant, now=then)
    wrong = new_intent(merchant, now=then)
    services.observation_record(
        transfer=transfer(wrong, network_code="polygon", token_contract=USDC_ETH, **block(5, then)), now=then
    )
    assert PaymentIntent.objects.get(pk=wrong.pk).state == "awaiting_payment"
    call_command("verify_payments")
    out = capsys.readouterr().out
    assert f"due {plain.pk}: awaiting_payment -> expired at the next sweep" in out
    assert f"due {wrong.pk}: awaiting_payment -> failed at the next sweep" in out
    assert "0 differ from their evidence, 2 due" in out


def test_reorg_takes_paid_back_and_reinclusion_pays_again():
    now = timezone.now()
    intent = new_intent(now=now)
    services.chain_tip_record(network_code="ethereum", height=120, block_hash="0xb120", now=now)
    observation = services.observation_record(transfer=transfer(intent, **block(100, now)), now=now)
    services.observations_set_canonical(observation_ids=[observation.pk], canonical=False, now=now)
    services.observations_set_canonical(observation_ids=[observation.pk], canonical=True, now=now)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert states(intent) == [
        ("created", "awaiting_payment"),
        ("awaiting_payment", "paid"),
        ("paid", "awaiting_payment"),
        ("awaiting_payment", "paid"),
    ]
    assert event_types(intent)[-2:] == ["payment.awaiting_payment", "payment.paid"]


def test_settle_without_new_evidence_writes_nothing():
    intent = new_intent()
    before = (StateTransition.objects.count(), Event.objects.count())
    services.payment_settle(intent_id=intent.pk, now=timezone.now())
    services.payment_settle(intent_id=intent.pk, now=timezone.now())
    assert (StateTransition.objects.count(), Event.objects.count()) == before


def test_verify_payments_reports_state_that_differs_from_evidence(capsys):
    intent = new_intent()
    call_command("verify_payments")
    assert "0 differ" in capsys.readouterr().out
    PaymentIntent.objects.filter(pk=intent.pk).update(state="paid")  # tamper behind the FSM's back
    with pytest.raises(CommandError):
        call_command("verify_payments")
    out = capsys.readouterr().out
    assert f"MISMATCH {intent.pk}: stored paid, evidence says awaiting_payment" in out

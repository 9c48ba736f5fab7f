"""Refund rules found by review (issue 13), without a node: a failed or canceled refund never takes a
later payment, going back from paid is announced, an excess is refunded once, a destination is never one
of the gateway's addresses, unconfirmed funds are not refundable yet, and anyone's Transfer log naming a
payment address (address poisoning, a token of their own) is not an outflow of the merchant's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from payments import refund_policy, services
from payments.chains.base import Destination, Spend
from payments.errors import Conflict, InvalidRequest
from payments.models import Outflow, PaymentIntent
from payments.policy import ObservationFacts
from payments.refund_policy import RefundFacts, evaluate_refund
from tests.factories import make_merchant
from tests.payments.test_services_settle import block, new_intent, transfer

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
FACTS = RefundFacts(
    amount=5_000_000,
    network="ethereum",
    token_contract="0xusdc",
    required_confirmations=2,
    expires_at=T0 + timedelta(days=14),
    approved=True,
    destination="0x" + "ab" * 20,
)


def paying(at: datetime, height: int | None = 100) -> ObservationFacts:
    return ObservationFacts(
        network="ethereum",
        tx_hash=f"0x{at:%s}",
        output_index=1,
        token_contract="0xusdc",
        amount=5_000_000,
        block_height=height,
        block_hash=f"b{height}" if height else "",
        block_time=at if height else None,
        seen_unconfirmed_at=None if height else at,
    )


def test_a_transfer_after_the_deadline_or_a_cancel_pays_nothing():
    late = paying(T0 + timedelta(days=15))
    assert evaluate_refund(FACTS, [late], 200, T0 + timedelta(days=16)).state == "failed"
    canceled = RefundFacts(**{**FACTS.__dict__, "canceled_at": T0 + timedelta(days=1)})
    assert (
        evaluate_refund(canceled, [paying(T0 + timedelta(days=2))], 200, T0 + timedelta(days=3)).state
        == "canceled"
    )
    # In time, it pays, whenever it is evaluated.
    assert (
        evaluate_refund(FACTS, [paying(T0 + timedelta(days=3))], 200, T0 + timedelta(days=20)).state
        == "confirmed"
    )


def test_going_back_from_paid_is_announced():
    assert refund_policy.events_for("confirmed", "awaiting_payment") == ["refund.reverted"]
    assert refund_policy.events_for("detected", "awaiting_payment") == ["refund.reverted"]
    assert refund_policy.events_for("awaiting_payment", "confirmed") == [
        "refund.detected",
        "refund.succeeded",
    ]


def paid(merchant, amount="10", pay=12_000_000, *, in_block=True) -> PaymentIntent:
    now = timezone.now()
    intent = new_intent(merchant, amount=amount)
    where = block(100, now) if in_block else {"seen_unconfirmed_at": now}
    services.observation_record(transfer=transfer(intent, tx=f"0x{intent.pk}", amount=pay, **where), now=now)
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xtip", now=now)
    return PaymentIntent.objects.get(pk=intent.pk)


def refund(intent, kind, value=None, destination=""):
    return services.refund_create(
        intent_id=intent.pk,
        amount_kind=kind,
        value=value,
        reason="the customer asked for it",
        requested_by="test",
        approved=True,
        destination=destination,
        now=timezone.now(),
    )


@pytest.mark.django_db
def test_the_excess_is_refunded_once():
    intent = paid(make_merchant())  # 12 received for 10 due
    assert int(refund(intent, "excess").amount_base_units) == 2_000_000
    with pytest.raises(Conflict) as refused:
        refund(intent, "excess")
    assert refused.value.code == "no_excess"


@pytest.mark.django_db
def test_unconfirmed_funds_are_not_refundable_yet():
    intent = paid(make_merchant(), pay=10_000_000, in_block=False)
    with pytest.raises(Conflict) as refused:
        refund(intent, "received")
    assert refused.value.code == "nothing_received"


@pytest.mark.django_db
def test_a_destination_is_never_a_payment_address_or_a_treasury():
    merchant = make_merchant()
    intent = paid(merchant)
    other = new_intent(merchant)
    with pytest.raises(InvalidRequest) as refused:
        refund(intent, "custom", "1", destination=other.address.address)
    assert refused.value.code == "destination_not_allowed"
    from payments.treasury import treasury_address_add

    treasury = "0x" + "cd" * 20
    treasury_address_add(
        merchant=merchant, network_code="ethereum", address=treasury, label="", now=timezone.now()
    )
    with pytest.raises(InvalidRequest) as refused:
        refund(intent, "custom", "1", destination=treasury)
    assert refused.value.code == "destination_not_allowed"


@pytest.mark.django_db
def test_anyones_transfer_log_naming_a_payment_address_is_not_its_outflow():
    intent = paid(make_merchant())
    usdc = intent.network_asset.contract_address
    now = timezone.now()

    def log(token: str, amount: int, payer: str):
        return services.outflow_record(
            spend=Spend(
                "ethereum",
                "0x" + token[-4:] + str(amount),
                1,
                intent.address.address,
                amount,
                token_contract=token,
                destinations=(Destination(1, "0x" + "99" * 20, amount, token),),
                fee_base_units=10**15,
                fee_payer=payer,
                block_height=150,
                block_hash="0xb",
                block_time=now,
                position_in_block=0,
            ),
            now=now,
        )

    attacker = "0x" + "66" * 20
    assert log("0x" + "77" * 20, 10**18, attacker) is None  # a token the gateway does not know
    assert log(usdc, 0, attacker) is None  # a zero-value transferFrom on the real token: address poisoning
    assert not Outflow.objects.exists()
    # A real transfer out that someone else paid the gas of (a sweeper's transferFrom): no fee is booked.
    swept = log(usdc, 12_000_000, attacker)
    assert swept is not None and int(swept.transaction.fee_base_units) == 0

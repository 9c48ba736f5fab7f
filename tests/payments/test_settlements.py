"""Settlement rules without a node: the fee split, and how a destination is classified (a treasury
declared after the outflow was seen, the wallet's change chain), from outflows recorded as a scan
records them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from payments import services
from payments.chains.base import Destination, Transfer
from payments.models import PaymentIntent, Refund, Settlement
from payments.services.settlements import _attribute_fee, _Leg, settlement_differences
from payments.treasury import treasury_address_add
from tests.factories import make_merchant
from tests.ledger import NETWORK, STRANGER, change_address, ltc_intent, paid, spent


@given(
    amounts=st.lists(st.integers(min_value=1, max_value=10**20), min_size=1, max_size=8),
    fee=st.integers(min_value=0, max_value=10**12),
)
def test_the_fee_is_split_pro_rata_and_adds_up(amounts, fee):
    legs = [_Leg("m", f"pi_{i}", 1, "", amount) for i, amount in enumerate(amounts)]
    _attribute_fee(legs, fee)
    assert sum(leg.fee for leg in legs) == fee
    total = sum(amounts)
    for i, leg in enumerate(legs):
        floor = fee * leg.amount // total
        # Every leg gets its share rounded down; only the first also gets what rounding left over.
        assert leg.fee == floor if i else floor <= leg.fee < floor + len(legs)


def test_legs_of_different_assets_share_the_fee_equally():
    legs = [_Leg("m", "pi_a", 1, "", 10**18), _Leg("m", "pi_b", 2, "0xtoken", 5)]
    _attribute_fee(legs, 1001)
    assert [leg.fee for leg in legs] == [501, 500]


def paid_and_spent(intent: PaymentIntent, destinations: list[Destination], fee: int = 1000) -> Settlement:
    paid(intent)
    return spent(intent, destinations, fee)


@pytest.mark.django_db
def test_an_unknown_outflow_becomes_a_sweep_once_its_address_is_declared():
    merchant = make_merchant()
    intent = ltc_intent(merchant)
    amount = int(intent.amount_due_base_units)
    settlement = paid_and_spent(intent, [Destination(0, STRANGER, amount - 1000)])
    assert settlement.kind == "unknown_outflow"
    assert list(intent.events.filter(type__startswith="settlement.").values_list("type", flat=True)) == [
        "settlement.created",
        "settlement.unexpected_outflow",
    ]
    treasury_address_add(
        merchant=merchant, network_code=NETWORK, address=STRANGER, label="", now=timezone.now()
    )
    settlement.refresh_from_db()
    assert settlement.kind == "sweep" and settlement.destinations[0]["kind"] == "sweep"


@pytest.mark.django_db
def test_change_to_the_wallets_own_change_chain_is_a_consolidation():
    merchant = make_merchant()
    treasury = change_address(5000)  # far past the gap: an address the gateway cannot tell is the wallet's
    treasury_address_add(
        merchant=merchant, network_code=NETWORK, address=treasury, label="", now=timezone.now()
    )
    intent = ltc_intent(merchant)
    amount = int(intent.amount_due_base_units)
    settlement = paid_and_spent(
        intent, [Destination(0, treasury, amount // 2), Destination(1, change_address(3), amount // 2 - 1000)]
    )
    assert settlement.kind == "sweep"
    assert [d["kind"] for d in settlement.destinations] == ["sweep", "consolidation"]
    assert [(int(leg.amount_base_units), int(leg.fee_base_units)) for leg in settlement.legs.all()] == [
        (amount, 1000)
    ]


REFUND_AMOUNT = 20_000_000  # 0.2 LTC


def refund_to_stranger(intent: PaymentIntent) -> Refund:
    return services.refund_create(
        intent_id=intent.pk,
        amount_kind="custom",
        value="0.2",
        reason="a part of the order came back",
        requested_by="test",
        approved=True,
        destination=STRANGER,
        now=timezone.now(),
    )


def refund_paid(intent: PaymentIntent, *, credit_first: bool) -> Settlement:
    """The payment's output spent to the refund's destination (0.2 LTC) and back to the wallet's change;
    the scan records the spend and the credit to the destination, in either order."""
    amount = int(intent.amount_due_base_units)
    now = timezone.now()
    credit = Transfer(NETWORK, "bb" * 32, 0, STRANGER, REFUND_AMOUNT, seen_unconfirmed_at=now)
    if credit_first:
        services.observation_record(transfer=credit, now=now)
    settlement = spent(
        intent,
        [
            Destination(0, STRANGER, REFUND_AMOUNT),
            Destination(1, change_address(0), amount - REFUND_AMOUNT - 1000),
        ],
    )
    if not credit_first:
        services.observation_record(transfer=credit, now=now)
    settlement.refresh_from_db()
    return settlement


def settlement_events(intent: PaymentIntent) -> list[str]:
    return list(
        intent.events.filter(type__startswith="settlement.")
        .order_by("sequence")
        .values_list("type", flat=True)
    )


@pytest.mark.django_db
@pytest.mark.parametrize("credit_first", [False, True])
def test_an_outflow_that_paid_a_refund_is_a_refund(credit_first):
    """The destination is `refund` because the refund's own evidence links that output, in whichever order
    the spend and the credit were recorded (a spend derived before its credit was seen says so first)."""
    merchant = make_merchant()
    intent = ltc_intent(merchant)
    paid(intent)
    refund = refund_to_stranger(intent)
    settlement = refund_paid(intent, credit_first=credit_first)
    refund.refresh_from_db()
    assert refund.state == "detected" and refund.observation.tx_hash == "bb" * 32
    assert settlement.kind == "refund"
    assert [d["kind"] for d in settlement.destinations] == ["refund", "consolidation"]
    expected = (
        ["settlement.created"] if credit_first else ["settlement.created", "settlement.unexpected_outflow"]
    )
    assert settlement_events(intent) == expected
    assert settlement_differences(settlement.transaction) == []


@pytest.mark.django_db
def test_an_exact_transfer_after_the_refunds_window_is_an_unknown_outflow():
    """The refund's window closed (the beat has not failed it yet) and then the merchant's wallet paid its
    exact amount to its destination: the refund fails, and the settlement does not call that money a
    refund, however the refund looked when the spend was first derived."""
    merchant = make_merchant()
    intent = ltc_intent(merchant)
    paid(intent)
    refund = refund_to_stranger(intent)
    Refund.objects.filter(pk=refund.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    settlement = refund_paid(intent, credit_first=False)
    refund.refresh_from_db()
    assert (refund.state, refund.observation_id) == ("failed", None)
    assert settlement.kind == "unknown_outflow"
    assert [d["kind"] for d in settlement.destinations] == ["unknown", "consolidation"]
    assert settlement_differences(settlement.transaction) == []


@pytest.mark.django_db
def test_a_refund_settlement_reorged_out_and_back_stays_a_refund():
    """The transaction that paid a refund leaves the chain (outflows first, then observations, as a scan
    rewinds) and comes back: reorged then restored, never an unexpected outflow on the way."""
    merchant = make_merchant()
    intent = ltc_intent(merchant)
    paid(intent)
    refund = refund_to_stranger(intent)
    settlement = refund_paid(intent, credit_first=True)
    now = timezone.now()
    services.outflow_transactions_set_canonical(
        transaction_ids=[settlement.transaction_id], canonical=False, now=now
    )
    services.observations_set_canonical(
        observation_ids=[Refund.objects.get(pk=refund.pk).observation_id], canonical=False, now=now
    )
    refund.refresh_from_db()
    settlement.refresh_from_db()
    assert (refund.state, refund.observation_id) == ("awaiting_payment", None)
    assert (settlement.canonical, settlement_events(intent)) == (
        False,
        ["settlement.created", "settlement.reorged"],
    )
    assert settlement_differences(settlement.transaction) == []
    refund_paid(intent, credit_first=False)  # the rescan finds both again: the spend first, as a scan does
    refund.refresh_from_db()
    settlement.refresh_from_db()
    assert (refund.state, settlement.canonical, settlement.kind) == ("detected", True, "refund")
    assert settlement_events(intent) == ["settlement.created", "settlement.reorged", "settlement.restored"]
    assert settlement_differences(settlement.transaction) == []


@pytest.mark.django_db
@pytest.mark.parametrize("credit_first", [False, True])
def test_a_consolidation_into_another_payment_address_pays_nothing(credit_first):
    """The merchant's wallet moves a paid payment's funds to the address of another of its payments (an
    address the gateway gave out): that payment is not paid by the merchant's own money, in whichever order
    the scan finds the spend and the credit; the settlement is a consolidation."""
    merchant = make_merchant()
    paid_one, waiting = ltc_intent(merchant), ltc_intent(merchant)
    paid(paid_one)
    amount = int(paid_one.amount_due_base_units)
    now = timezone.now()
    credit = Transfer(NETWORK, "bb" * 32, 0, waiting.address.address, amount - 1000, seen_unconfirmed_at=now)
    if credit_first:
        services.observation_record(transfer=credit, now=now)
        assert PaymentIntent.objects.get(pk=waiting.pk).state == "detected"  # not known yet to be internal
    settlement = spent(paid_one, [Destination(0, waiting.address.address, amount - 1000)])
    if not credit_first:
        services.observation_record(transfer=credit, now=now)
    waiting = PaymentIntent.objects.get(pk=waiting.pk)
    assert (waiting.state, int(waiting.amount_seen_base_units)) == ("awaiting_payment", 0)
    assert settlement.kind == "consolidation"
    from payments.selectors_refunds import amount_received

    assert amount_received(waiting) == 0  # nothing of a customer's to refund

"""The per-order reconciliation from evidence recorded as a scan records it (no node): each status reached
by the flow that leads to it, the amounts and fees of a row, and the rules as a pure function."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from payments import services
from payments.chains.base import Destination
from payments.models import PaymentIntent
from payments.treasury import treasury_address_add
from reconciliation import rules
from reconciliation.selectors import COLUMNS, RowFilter, reconciliation_rows
from tests.factories import make_merchant
from tests.ledger import NETWORK, STRANGER, change_address, ltc_intent, paid, reconciled, spent

HALF_LTC = 50_000_000
TREASURY = change_address(5000)  # the merchant's cold wallet: far past the change gap, declared


def rows(merchant) -> dict[str, dict]:
    return reconciled(merchant)


def tip(height: int = 20) -> None:
    services.chain_tip_record(
        network_code=NETWORK, height=height, block_hash=f"b{height}", now=timezone.now()
    )


@pytest.fixture
def shop(db):
    merchant = make_merchant()
    treasury_address_add(
        merchant=merchant, network_code=NETWORK, address=TREASURY, label="", now=timezone.now()
    )
    return merchant


def refund(intent: PaymentIntent, value: str | None = None):
    return services.refund_create(
        intent_id=intent.pk,
        amount_kind="custom" if value else "received",
        value=value,
        reason="the customer sent it back",
        requested_by="test",
        approved=True,
        destination=STRANGER,
        now=timezone.now(),
    )


@pytest.mark.django_db
def test_a_payment_paid_and_swept_in_a_block_is_reconciled_with_its_fee_and_settlement(shop):
    intent = ltc_intent(shop, merchant_order_id="order-7", customer_id="cus-1")
    paid(intent, "a1" * 32)
    tip()
    settlement = spent(
        intent,
        [Destination(0, TREASURY, HALF_LTC - 1500)],
        fee=1500,
        tx_hash="b1" * 32,
        spent_tx_hash="a1" * 32,
        height=12,
    )
    row = rows(shop)[intent.pk]
    assert set(row) - {"_position"} == set(COLUMNS)
    assert (row["reconciliation_status"], row["reconciliation_reason"]) == (
        "reconciled",
        "received and moved on",
    )
    assert (row["merchant_order_id"], row["customer_id"], row["state"]) == ("order-7", "cus-1", "paid")
    assert (row["asset"], row["network"]) == ("LTC", NETWORK)
    assert (row["amount_requested"], row["amount_received"], row["amount_counted"]) == ("0.50000000",) * 3
    assert (row["amount_refunded"], row["amount_on_address"]) == ("0.00000000", "0.00000000")
    assert (row["network_fee"], row["network_fee_asset"]) == ("0.00001500", "LTC")
    assert row["settlement_ids"] == [settlement.pk] and row["settled_at"]
    assert row["transaction_hashes"] == ["a1" * 32]
    assert row["confirmations"] == "11"  # block 10 under a tip at 20
    assert row["paid_at"] and row["first_seen_at"]
    assert row["quote_rate"] is None and row["fiat_value_at_quote"] is None  # priced in LTC: no fiat quote


@pytest.mark.django_db
def test_each_status_is_reached_by_the_flow_that_leads_to_it(shop):
    """One day of a shop: an open payment, one paid and not swept, one paid by two transactions and swept
    in part, one with an open refund, one whose funds left to an undeclared address, one paid after its
    window, one refunded in full from its own address, one refunded in part from another wallet."""
    open_one = ltc_intent(shop)

    waiting = ltc_intent(shop)
    paid(waiting, "a2" * 32)

    halves = ltc_intent(shop)
    paid(halves, "a3" * 32, amount=HALF_LTC // 2)
    paid(halves, "a4" * 32, amount=HALF_LTC // 2)
    tip()
    spent(
        halves,
        [Destination(0, TREASURY, HALF_LTC // 2 - 1000)],
        tx_hash="b3" * 32,
        spent_tx_hash="a3" * 32,
        amount=HALF_LTC // 2,
        height=13,
    )

    refunding = ltc_intent(shop)
    paid(refunding, "a5" * 32)
    tip()
    refund(refunding, "0.1")

    leaked = ltc_intent(shop)
    paid(leaked, "a6" * 32)
    tip()
    spent(
        leaked,
        [Destination(0, STRANGER, HALF_LTC - 1000)],
        tx_hash="b6" * 32,
        spent_tx_hash="a6" * 32,
        height=14,
    )

    late = ltc_intent(shop)
    PaymentIntent.objects.filter(pk=late.pk).update(
        expires_at=timezone.now() - timedelta(hours=2), late_payment_window_minutes=0
    )
    services.expire_due_intents(now=timezone.now())
    paid(late, "a7" * 32)

    refunded = ltc_intent(shop)
    paid(refunded, "a8" * 32)
    tip()
    refund(refunded)  # everything received
    spent(
        refunded, [Destination(0, STRANGER, HALF_LTC)], tx_hash="b8" * 32, spent_tx_hash="a8" * 32, height=15
    )
    paid(refunded, "b8" * 32, address=STRANGER, height=15)  # the destination's credit, the same transaction

    partly = ltc_intent(shop)
    paid(partly, "a9" * 32)
    tip()
    spent(
        partly,
        [Destination(0, TREASURY, HALF_LTC - 1000)],
        tx_hash="b9" * 32,
        spent_tx_hash="a9" * 32,
        height=16,
    )
    refund(partly, "0.2")
    paid(partly, "c9" * 32, amount=20_000_000, address=STRANGER, height=16)  # paid from another wallet
    tip(30)

    found = {pid: (row["state"], row["reconciliation_status"]) for pid, row in rows(shop).items()}
    assert found == {
        open_one.pk: ("awaiting_payment", "awaiting_settlement"),
        waiting.pk: ("paid", "awaiting_settlement"),
        halves.pk: ("paid", "partially_settled"),
        refunding.pk: ("paid", "refund_pending"),
        leaked.pk: ("paid", "unattributed_funds"),
        late.pk: ("expired", "unattributed_funds"),
        refunded.pk: ("refunded", "reconciled"),
        partly.pk: ("paid", "reconciled"),
    }
    row = rows(shop)[partly.pk]
    assert (row["amount_refunded"], row["refund_states"], row["refund_amounts"]) == (
        "0.20000000",
        ["confirmed"],
        ["0.20000000"],
    )
    assert row["refund_transaction_hashes"] == ["c9" * 32]
    assert rows(shop)[halves.pk]["amount_on_address"] == "0.25000000"
    assert (
        rows(shop)[late.pk]["reconciliation_reason"]
        == "0.50000000 LTC received but neither counted to the order nor refunded"
    )


@pytest.mark.django_db
def test_rows_follow_the_filters_in_creation_order(shop):
    first, second = ltc_intent(shop), ltc_intent(shop)
    other = ltc_intent(make_merchant("Another shop", account=1))
    everything = [row["payment_id"] for row in reconciliation_rows(RowFilter(merchant_ids=(shop.pk,)))]
    assert everything == [first.pk, second.pk] and other.pk not in everything
    after = reconciliation_rows(RowFilter(merchant_ids=(shop.pk,), created_from=second.created_at))
    assert [row["payment_id"] for row in after] == [second.pk]
    before = reconciliation_rows(RowFilter(merchant_ids=(shop.pk,), created_to=second.created_at))
    assert [row["payment_id"] for row in before] == [first.pk]
    assert list(reconciliation_rows(RowFilter(merchant_ids=(shop.pk,), state="paid"))) == []


amounts = st.integers(min_value=0, max_value=10**30)


@given(
    state=st.sampled_from(
        ["awaiting_payment", "confirming", "paid", "overpaid", "underpaid", "expired", "refunded"]
    ),
    received=amounts,
    counted=amounts,
    refunded=amounts,
    refunds_open=st.integers(min_value=0, max_value=3),
    on_address=amounts,
    moved_unknown=amounts,
    other_assets=st.integers(min_value=0, max_value=2),
    mismatch=st.sampled_from(["", "block reorged while no scanner ran"]),
)
def test_the_rules_give_one_status_and_reconciled_means_nothing_left(**facts):
    f = rules.OrderFacts(**facts)
    result = rules.reconcile(f)
    assert result.status in rules.STATUSES and result.reason
    if f.mismatch:
        assert result.status == rules.CHAIN_MISMATCH
    if result.status == rules.RECONCILED:
        # nothing open, nothing unknown, nothing left on the address, everything received accounted for
        kept = f.counted if f.state in rules.KEPT_STATES else 0
        assert f.refunds_open == 0 and f.moved_unknown == 0 and f.other_assets == 0 and f.on_address == 0
        assert f.received <= kept + f.refunded and f.state not in rules.OPEN_STATES

"""A day of a shop on a real Bitcoin-family node (litecoind regtest, the test holding the merchant's keys):
payments, one sweep of several to the treasury (one payment swept in part), a refund paid in full from a
payment's own address, a partial refund paid from another wallet, an open refund, a payment after its
window, an outflow to an undeclared address and a stored amount altered in the database. Every
reconciliation status is reached by the flow that leads to it, and the CSV and the totals agree."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from payments import services
from payments.models import ChainObservation, PaymentIntent, Refund
from payments.treasury import treasury_address_add
from reconciliation.reports import totals
from reconciliation.verification import reverify
from tests.factories import make_merchant
from tests.integration.test_outflows_litecoin import NETWORK, import_keys, scan
from tests.ledger import change_address, ltc_intent, reconciled

pytestmark = pytest.mark.django_db

FEE = Decimal("0.0002")


def sats(value) -> int:
    return int(Decimal(str(value)) * 10**8)


def pay(node, intent: PaymentIntent, amount: str | None = None) -> str:
    return node.send(intent.address.address, amount or str(intent.amount_due_base_units / Decimal(10**8)))


def outputs(*intents: PaymentIntent) -> list[dict]:
    return [
        {"txid": o.tx_hash, "vout": o.output_index}
        for o in ChainObservation.objects.filter(intent__in=intents).order_by("pk")
    ]


def send_raw(node, inputs: list[dict], to: dict[str, Decimal]) -> str:
    raw = node.rpc("createrawtransaction", inputs, {a: str(v) for a, v in to.items()})
    signed = node.rpc("signrawtransactionwithwallet", raw)
    assert signed["complete"], signed
    return node.rpc("sendrawtransaction", signed["hex"])


def wallet_coin(node, intents: list[PaymentIntent]) -> dict:
    """A confirmed coin of the node's own wallet, not one of the payment addresses'."""
    theirs = {i.address.address for i in intents}
    used = {(c["txid"], c["vout"]) for c in node.rpc("listlockunspent")}
    coin = next(
        u
        for u in node.rpc("listunspent", 1)
        if u["address"] not in theirs
        and Decimal(str(u["amount"])) >= 1
        and (u["txid"], u["vout"]) not in used
    )
    node.rpc("lockunspent", False, [{"txid": coin["txid"], "vout": coin["vout"]}])  # not chosen twice
    return coin


def refund(intent: PaymentIntent, destination: str, value: str | None = None) -> Refund:
    return services.refund_create(
        intent_id=intent.pk,
        amount_kind="custom" if value else "received",
        value=value,
        reason="the customer returned it",
        requested_by="test",
        approved=True,
        destination=destination,
        now=timezone.now(),
    )


def test_every_status_from_a_real_day(ltc_regtest):
    node, backend = ltc_regtest
    merchant = make_merchant()
    treasury = node.new_address()
    treasury_address_add(
        merchant=merchant, network_code=NETWORK, address=treasury, label="", now=timezone.now()
    )
    swept, waiting, refund_open, full_refund, partly_refunded, leaked, tampered = (
        ltc_intent(merchant, a) for a in ("0.5", "0.2", "0.2", "0.3", "0.4", "0.1", "0.1")
    )
    halves = ltc_intent(merchant, "0.3")
    open_one = ltc_intent(merchant)
    for intent in (swept, waiting, refund_open, full_refund, partly_refunded, leaked, tampered):
        pay(node, intent)
    pay(node, halves, "0.1")
    pay(node, halves, "0.2")
    node.mine(2)
    scan(backend)
    everyone = [swept, waiting, refund_open, full_refund, partly_refunded, leaked, tampered, halves]
    assert {PaymentIntent.objects.get(pk=i.pk).state for i in everyone} == {"paid"}
    import_keys(node, everyone)
    # The node's wallet now holds the payment addresses' keys too: lock their coins, so that the node's own
    # sends (the customers' and the other wallet's) never spend them; the merchant's spends name them.
    node.rpc("lockunspent", False, outputs(*everyone))

    # Refunds: one left open, one to be paid in full from the payment's own address, one in part from the
    # merchant's other wallet (the node's).
    refund(refund_open, node.new_address(), "0.05")
    full_to, part_to = node.new_address(), node.new_address()
    refund(full_refund, full_to)
    refund(partly_refunded, part_to, "0.1")

    # One sweep: three payments and one of the halves' two outputs, to the treasury.
    first_half = ChainObservation.objects.get(intent=halves, amount_base_units=10_000_000)
    sweep_inputs = [
        *outputs(swept, partly_refunded, tampered),
        {"txid": first_half.tx_hash, "vout": first_half.output_index},
    ]
    send_raw(node, sweep_inputs, {treasury: Decimal("1.1") - FEE})
    # The full refund from the payment's address, a wallet coin paying the fee, the change back to the
    # merchant's wallet's change chain (a consolidation, not an unknown outflow).
    coin = next(
        u for u in node.rpc("listunspent", 1) if Decimal(str(u["amount"])) >= 1 and u["address"] != treasury
    )
    change = Decimal(str(coin["amount"])) - FEE
    send_raw(
        node,
        [*outputs(full_refund), {"txid": coin["txid"], "vout": coin["vout"]}],
        {full_to: Decimal("0.3"), change_address(0): change},
    )
    # The partial refund from the merchant's other wallet (a coin of the node's own; the payment addresses'
    # coins, whose keys the node holds too, are not touched).
    other = wallet_coin(node, everyone)
    send_raw(
        node,
        [{"txid": other["txid"], "vout": other["vout"]}],
        {part_to: Decimal("0.1"), node.new_address(): Decimal(str(other["amount"])) - Decimal("0.1") - FEE},
    )
    send_raw(node, outputs(leaked), {node.new_address(): Decimal("0.1") - FEE})  # nobody declared it
    node.mine(2)
    scan(backend)

    # A payment after its window closed.
    late = ltc_intent(merchant, "0.2")
    PaymentIntent.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(hours=2))
    services.expire_due_intents(now=timezone.now())
    pay(node, late)
    node.mine(2)
    scan(backend)

    # A stored amount altered; the nightly re-verification asks the node.
    ChainObservation.objects.filter(intent=tampered).update(amount_base_units=10_000_001)
    run = reverify(
        since=timezone.now() - timedelta(days=1), now=timezone.now(), backend_for=lambda n: backend
    )
    assert run.mismatches == 1

    rows = reconciled(merchant)
    found = {pid: (r["state"], r["reconciliation_status"]) for pid, r in rows.items()}
    assert found == {
        swept.pk: ("paid", "reconciled"),
        waiting.pk: ("paid", "awaiting_settlement"),
        refund_open.pk: ("paid", "refund_pending"),
        full_refund.pk: ("refunded", "reconciled"),
        partly_refunded.pk: ("paid", "reconciled"),
        leaked.pk: ("paid", "unattributed_funds"),
        tampered.pk: ("paid", "chain_mismatch"),
        halves.pk: ("paid", "partially_settled"),
        open_one.pk: ("awaiting_payment", "awaiting_settlement"),
        late.pk: ("expired", "unattributed_funds"),
    }
    assert rows[halves.pk]["amount_on_address"] == "0.20000000"
    assert rows[late.pk]["flags"] == ["late_payment"] and rows[swept.pk]["flags"] == []
    assert rows[partly_refunded.pk]["amount_refunded"] == "0.10000000"
    assert rows[full_refund.pk]["refund_states"] == ["confirmed"]
    assert rows[swept.pk]["network_fee"] and rows[swept.pk]["network_fee_asset"] == "LTC"
    # The sweep's fee, split over its four legs, adds up to the fee the node reports for it.
    sweep_fee = sum(sats(rows[p.pk]["network_fee"]) for p in (swept, partly_refunded, tampered, halves))
    assert sweep_fee == sats(FEE)
    [group] = totals(rows.values(), by_day=False)
    assert group["payments"] == 10 and group["statuses"]["reconciled"] == 3
    assert Decimal(group["amount_received"]) == sum(Decimal(r["amount_received"]) for r in rows.values())

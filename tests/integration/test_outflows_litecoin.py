"""Outflows and settlements on a real Bitcoin-family node (Litecoin Core in regtest, Core-RPC backend):
the merchant's wallet (the test holds the keys of the published test mnemonic, imported into litecoind's
wallet; the gateway never sees them) sweeps two paid payments in one transaction to its declared
treasury; the scanner records the spends of the outputs it had credited, with the transaction's outputs
and fee, and derives one settlement with two legs and the fee split; a reorg takes the block away and
back, then a conflicting transaction to an undeclared address replaces the sweep: an unknown outflow, its
case and its events. The merchant's receiver gets every settlement event, signed."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from standardwebhooks import Webhook

from payments import services
from payments.chains.bitcoin_rpc import to_satoshi
from payments.models import (
    ChainObservation,
    NetworkAsset,
    Outflow,
    OutflowTransaction,
    PaymentIntent,
    Settlement,
    SettlementLeg,
)
from payments.scanning import network_scan
from payments.treasury import treasury_address_add
from payments.webhooks.delivery import deliver_due, events_dispatch
from payments.webhooks.endpoints import endpoint_create
from support.cases import cases_open
from support.models import SupportCase
from tests.factories import make_merchant
from tests.nodes.litecoind import LitecoindNode
from tests.nodes.merchant_keys import litecoin_regtest_wif
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db

NETWORK = "litecoin-regtest"
FEE = 20_000  # satoshi the sweep leaves to the miner


@pytest.fixture
def receiver(loopback_webhooks):
    r = Receiver().start()
    yield r
    r.stop()


def scan(backend):
    return network_scan(backend=backend, now=timezone.now())


def paid_intents(node: LitecoindNode, backend, merchant, amounts: list[str]) -> list[PaymentIntent]:
    na = NetworkAsset.objects.select_related("asset", "network").get(asset__code="LTC", network__code=NETWORK)
    intents = []
    for amount in amounts:
        data = services.IntentInput(price_amount=Decimal(amount), price_currency="LTC", network_asset=na)
        intent = services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())
        node.send(intent.address.address, amount)
        intents.append(intent)
    node.mine(2)
    scan(backend)
    intents = [PaymentIntent.objects.select_related("address").get(pk=i.pk) for i in intents]
    assert [i.state for i in intents] == ["paid"] * len(amounts)
    return intents


def import_keys(node: LitecoindNode, intents: list[PaymentIntent]) -> None:
    """The merchant's wallet: the node's wallet learns the payment addresses' private keys, and confirms
    (independently of the gateway's derivation) that they are the keys of those addresses."""
    for intent in intents:
        node.rpc("importprivkey", litecoin_regtest_wif(intent.address.derivation_index), "", False)
        assert node.rpc("getaddressinfo", intent.address.address)["ismine"] is True


def spend(node: LitecoindNode, outpoints: list[ChainObservation], to: str, amount: int) -> str:
    """A signed raw transaction spending exactly these outputs to `to` (hex)."""
    inputs = [{"txid": o.tx_hash, "vout": o.output_index} for o in outpoints]
    raw = node.rpc("createrawtransaction", inputs, {to: str(Decimal(amount) / 10**8)})
    signed = node.rpc("signrawtransactionwithwallet", raw)
    assert signed["complete"], signed
    return signed["hex"]


def delivered(receiver: Receiver, secret: str, kind: str) -> list[dict]:
    """The events of type `kind` the merchant's receiver got, each signature checked (standardwebhooks)."""
    now = timezone.now()
    events_dispatch(now=now)
    deliver_due(now=now)
    found = [Webhook(secret).verify(r.body, r.headers) for r in receiver.received]
    return [e for e in found if e["type"] == kind]


def test_a_sweep_of_two_payments_settles_then_is_reorged_and_replaced(ltc_regtest, receiver):
    node, backend = ltc_regtest
    merchant = make_merchant()
    _, secret = endpoint_create(merchant=merchant, url=receiver.url, now=timezone.now())
    treasury = node.new_address()
    treasury_address_add(
        merchant=merchant, network_code=NETWORK, address=treasury, label="cold", now=timezone.now()
    )
    intents = paid_intents(node, backend, merchant, ["0.5", "0.25"])
    import_keys(node, intents)
    credited = [ChainObservation.objects.get(intent=i) for i in intents]
    total = sum(int(o.amount_base_units) for o in credited)
    assert total == 75_000_000

    sweep = node.rpc("sendrawtransaction", spend(node, credited, treasury, total - FEE))
    report = scan(backend)
    assert (report.transfers, report.outflows) == (0, 2)
    tx = OutflowTransaction.objects.get()
    assert (tx.tx_hash, tx.canonical, tx.block_height) == (sweep, True, None)
    assert tx.seen_unconfirmed_at is not None
    # The fee as the node itself reports it, not as the gateway computed it.
    assert int(tx.fee_base_units) == to_satoshi(node.rpc("getmempoolentry", sweep)["fees"]["base"]) == FEE
    assert tx.fee_payer == ""
    [destination] = tx.destinations
    assert (destination["address"], destination["amount"]) == (treasury, str(total - FEE))
    assert destination["script"] == node.rpc("getaddressinfo", treasury)["scriptPubKey"]
    outflows = {o.intent_id: o for o in Outflow.objects.filter(transaction=tx)}
    assert set(outflows) == {i.pk for i in intents}
    for intent, observation in zip(intents, credited, strict=True):
        outflow = outflows[intent.pk]
        assert outflow.spent_observation_id == observation.pk
        assert (outflow.address, int(outflow.amount_base_units)) == (
            intent.address.address,
            int(observation.amount_base_units),
        )
        assert outflow.network_asset.asset.code == "LTC" and outflow.token_contract == ""
    assert sorted(o.index for o in outflows.values()) == [0, 1]  # the sweep's input indexes

    # One settlement, a sweep, two legs in input order; the fee split pro rata, the remainder (1 sat) to
    # the first: 20,000 x 50/75 = 13,333.3 -> 13,334 and 20,000 x 25/75 = 6,666.6 -> 6,666.
    settlement = Settlement.objects.get()
    assert (settlement.kind, settlement.canonical, settlement.merchant_id) == ("sweep", True, merchant.pk)
    assert int(settlement.fee_base_units) == FEE
    legs = list(settlement.legs.order_by("position"))
    assert [(leg.intent_id, int(leg.amount_base_units), int(leg.fee_base_units)) for leg in legs] == [
        (intents[0].pk, 50_000_000, 13_334),
        (intents[1].pk, 25_000_000, 6_666),
    ]
    assert [(leg.fiat_currency, leg.fiat_value, leg.rate_source) for leg in legs] == [
        ("USD", Decimal("40.13"), "fixed"),  # 0.5 LTC x 80.25 = 40.125, to the cent, half up
        ("USD", Decimal("20.06"), "fixed"),  # 0.25 LTC x 80.25 = 20.0625
    ]
    [destination] = settlement.destinations
    assert (destination["address"], destination["kind"]) == (treasury, "sweep")
    created = delivered(receiver, secret, "settlement.created")
    assert sorted(e["data"]["id"] for e in created) == sorted(i.pk for i in intents)
    for event in created:
        assert event["data"]["settlement"]["id"] == settlement.pk
        assert event["data"]["settlement"]["kind"] == "sweep"
        assert [leg["network_fee"]["base_units"] for leg in event["data"]["settlement"]["legs"]] == [
            "13334",
            "6666",
        ]

    # Scanning again changes nothing; mined, the transaction gets its block.
    scan(backend)
    assert Outflow.objects.count() == 2 and OutflowTransaction.objects.count() == 1
    [block_hash] = node.mine(1)
    report = scan(backend)
    assert report.outflows == 2  # the block's spends, the same rows
    tx.refresh_from_db()
    assert (tx.block_hash, tx.block_height, tx.position_in_block, tx.canonical) == (
        block_hash,
        node.height(),
        1,
        True,
    )
    assert Outflow.objects.count() == 2
    # The payments are untouched by their funds leaving: still paid.
    assert {PaymentIntent.objects.get(pk=i.pk).state for i in intents} == {"paid"}

    # The block is invalidated: the sweep leaves the chain (the settlement is reorged) and is back in the
    # mempool (restored), canonical and unconfirmed again.
    node.rpc("invalidateblock", block_hash)
    assert sweep in node.rpc("getrawmempool")
    scan(backend)
    tx.refresh_from_db()
    assert (tx.canonical, tx.block_height, tx.block_hash) == (True, None, "")
    assert len(delivered(receiver, secret, "settlement.reorged")) == 2
    assert len(delivered(receiver, secret, "settlement.restored")) == 2
    settlement.refresh_from_db()
    assert (settlement.canonical, settlement.revision) == (True, 2)

    # A conflicting transaction spending the same outputs elsewhere is mined instead: the sweep leaves
    # the mempool and stops being evidence; the conflict is recorded with its own outflows.
    elsewhere = node.new_address()
    conflict_hex = spend(node, credited, elsewhere, total - 2 * FEE)
    result = node.rpc("generateblock", node.new_address(), [conflict_hex])
    conflict = node.rpc("decoderawtransaction", conflict_hex)["txid"]
    assert sweep not in node.rpc("getrawmempool")
    scan(backend)
    tx.refresh_from_db()
    assert tx.canonical is False
    replaced = OutflowTransaction.objects.get(tx_hash=conflict)
    assert (replaced.canonical, replaced.block_hash, int(replaced.fee_base_units)) == (
        True,
        result["hash"],
        2 * FEE,
    )
    assert [d["address"] for d in replaced.destinations] == [elsewhere]
    assert sorted(replaced.outflows.values_list("spent_observation_id", flat=True)) == sorted(
        o.pk for o in credited
    )
    assert Outflow.objects.count() == 4
    # The sweep's settlement is reorged away; the conflict's is an unknown outflow, with the same legs.
    settlement.refresh_from_db()
    assert settlement.canonical is False
    unknown = Settlement.objects.get(transaction=replaced)
    assert (unknown.kind, unknown.canonical) == ("unknown_outflow", True)
    assert [d["kind"] for d in unknown.destinations] == ["unknown"]
    assert [(leg.intent_id, int(leg.fee_base_units)) for leg in unknown.legs.order_by("position")] == [
        (intents[0].pk, 26_667),  # 40,000 x 50/75 = 26,666.6 -> 26,666 + the remainder
        (intents[1].pk, 13_333),
    ]
    assert len(delivered(receiver, secret, "settlement.reorged")) == 4
    unexpected = delivered(receiver, secret, "settlement.unexpected_outflow")
    assert sorted(e["data"]["id"] for e in unexpected) == sorted(i.pk for i in intents)
    assert {e["data"]["settlement"]["tx_hash"] for e in unexpected} == {conflict}
    # Support sees one case for it, in the unknown-outflows queue.
    cases_open(now=timezone.now())
    [case] = SupportCase.objects.filter(kind="unknown_outflow")
    assert (case.merchant_id, case.transaction_hashes) == (merchant.pk, [conflict])
    # The payments themselves stay paid: where their money went afterwards does not change that.
    assert {PaymentIntent.objects.get(pk=i.pk).state for i in intents} == {"paid"}

    # Re-derived from the evidence, everything agrees; a leg altered in the database does not.
    out = StringIO()
    call_command("verify_payments", stdout=out)
    assert "checked the settlements of 2 outflow transactions, 0 differ" in out.getvalue()
    SettlementLeg.objects.filter(settlement=unknown, position=1).update(fee_base_units=13_000)
    with pytest.raises(CommandError, match="the settlements of 1 outflow transactions and 0 refunds"):
        call_command("verify_payments", stdout=(out := StringIO()))
    assert f"MISMATCH settlement of {replaced.network_id}:{conflict}" in out.getvalue()
    assert "legs stored" in out.getvalue()


def test_a_refund_to_a_legacy_address_is_seen_in_the_mempool_then_confirmed(ltc_regtest):
    """A customer's exchange may give a legacy (base58 P2PKH) address: watched by its script, the refund is
    seen unconfirmed, then confirmed; a transfer of another amount to it is not recorded at all."""
    node, backend = ltc_regtest
    [intent] = paid_intents(node, backend, make_merchant(), ["0.5"])
    customer = node.rpc("getnewaddress", "", "legacy")
    refund = services.refund_create(
        intent_id=intent.pk,
        amount_kind="custom",
        value="0.125",
        reason="one of the two items was returned",
        requested_by="test",
        approved=True,
        destination=customer,
        now=timezone.now(),
    )
    assert refund.state == "awaiting_payment"
    node.send(customer, "0.12")  # the wrong amount: not the refund's, and not the gateway's business
    paid = node.send(customer, "0.125")  # from the node's wallet: any address may pay a refund
    scan(backend)
    refund.refresh_from_db()
    assert (refund.state, refund.observation.tx_hash) == ("detected", paid)
    assert ChainObservation.objects.filter(address=customer).count() == 1
    node.mine(2)
    scan(backend)
    refund.refresh_from_db()
    assert refund.state == "confirmed"
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert (intent.state, int(intent.amount_refunded_base_units)) == ("paid", 12_500_000)

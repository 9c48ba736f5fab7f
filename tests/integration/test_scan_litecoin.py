"""Chain watching on a real Bitcoin-family node (Litecoin Core in regtest) through the Core-RPC backend:
mempool then blocks become observations, the payment's state path and events follow, and a block
invalidated under a paid payment sends it back until the payment is mined again."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from payments import services
from payments.chains.bitcoin_rpc import BitcoinCoreBackend, BitcoinRpcError, to_satoshi, witness_script_hex
from payments.models import ChainObservation, Network, NetworkAsset, PaymentIntent
from payments.scanning import network_scan
from tests.factories import make_merchant
from tests.nodes.litecoind import REGTEST_HRP, LitecoindNode

pytestmark = pytest.mark.django_db

NETWORK = "litecoin-regtest"


def backend_for_node(node: LitecoindNode) -> BitcoinCoreBackend:
    network = Network.objects.get(code=NETWORK)
    return BitcoinCoreBackend(network.code, network.rpc_url, hrp=network.bech32_hrp)


@pytest.fixture
def regtest(litecoind):
    """litecoin-regtest pointed at this node, scanning from its tip; LTC needs 2 confirmations."""
    network = Network.objects.get(code=NETWORK)
    assert network.bech32_hrp == REGTEST_HRP
    network.rpc_url = litecoind.url
    network.scan_start_height = litecoind.height()
    network.save()
    NetworkAsset.objects.filter(network=network, asset__code="LTC").update(default_confirmations=2)
    return litecoind, backend_for_node(litecoind)


def new_intent(amount: str) -> PaymentIntent:
    na = NetworkAsset.objects.select_related("asset", "network").get(asset__code="LTC", network__code=NETWORK)
    data = services.IntentInput(price_amount=Decimal(amount), price_currency="LTC", network_asset=na)
    return services.payment_intent_create(merchant=make_merchant(), data=data, now=timezone.now())


def path(intent: PaymentIntent) -> list[str]:
    return list(intent.transitions.order_by("id").values_list("to_state", flat=True))


def event_types(intent: PaymentIntent) -> list[str]:
    return list(intent.events.order_by("sequence").values_list("type", flat=True))


def scan(backend):
    return network_scan(backend=backend, now=timezone.now())


def state(intent: PaymentIntent) -> str:
    return PaymentIntent.objects.get(pk=intent.pk).state


def test_mempool_then_blocks_then_reorg_and_back(regtest):
    mempool_then_blocks_then_reorg_and_back(*regtest)


def mempool_then_blocks_then_reorg_and_back(node: LitecoindNode, backend) -> None:
    """The whole life of a payment on a Bitcoin-family node, through any backend (Core RPC, Esplora)."""
    intent = new_intent("0.5")
    assert intent.address.address.startswith("rltc1q")
    assert int(intent.amount_due_base_units) == 50_000_000 and intent.required_confirmations == 2
    scan(backend)
    assert state(intent) == "awaiting_payment"

    txid = node.send(intent.address.address, "0.5")
    report = scan(backend)  # no new block: seen in the mempool
    assert report.transfers == 1
    assert state(intent) == "detected"
    observation = ChainObservation.objects.get()
    assert (observation.tx_hash, observation.block_height, int(observation.amount_base_units)) == (
        txid,
        None,
        50_000_000,
    )
    assert observation.seen_unconfirmed_at is not None

    [block_hash] = node.mine(1)
    scan(backend)
    assert state(intent) == "confirming"
    observation.refresh_from_db()
    assert (observation.block_height, observation.block_hash) == (node.height(), block_hash)
    assert observation.position_in_block == 1  # after the coinbase

    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "detected", "confirming", "paid"]
    assert int(intent.amount_confirmed_base_units) == 50_000_000
    assert event_types(intent) == [
        "payment.created",
        "payment.awaiting_payment",
        "payment.detected",
        "payment.confirming",
        "payment.paid",
    ]

    # The block holding the payment is invalidated: the chain is back one block below it, and the
    # payment is back in the mempool.
    node.rpc("invalidateblock", block_hash)
    assert txid in node.rpc("getrawmempool")
    report = scan(backend)
    assert report.reorg_fork == node.height()
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "detected"
    # One scan: the rewind drops the block's evidence (paid -> awaiting_payment), then the mempool shows
    # the payment again (-> detected).
    assert path(intent) == [
        "awaiting_payment",
        "detected",
        "confirming",
        "paid",
        "awaiting_payment",
        "detected",
    ]
    assert event_types(intent)[-2:] == ["payment.awaiting_payment", "payment.detected"]
    observation.refresh_from_db()
    assert observation.canonical and observation.block_height is None and observation.block_hash == ""

    # Mined again on a new branch (to another address, or the node rebuilds the invalid block).
    other = node.new_address()
    [new_hash] = node.mine(1, address=other)
    assert new_hash != block_hash
    scan(backend)
    assert state(intent) == "confirming"
    node.mine(1, address=other)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "paid"
    assert path(intent)[-3:] == ["detected", "confirming", "paid"]
    assert event_types(intent)[-3:] == ["payment.detected", "payment.confirming", "payment.paid"]
    observation.refresh_from_db()
    assert (observation.block_hash, observation.canonical) == (new_hash, True)
    assert ChainObservation.objects.count() == 1


def test_backend_amounts_are_exact_satoshi(litecoind):
    node = litecoind
    backend = BitcoinCoreBackend(NETWORK, node.url, hrp=REGTEST_HRP)
    a, b, c = node.new_address(), node.new_address(), node.new_address()
    txid = node.rpc("sendmany", "", {a: "0.1", b: "0.2"})  # one transaction, two outputs
    txid_c = node.send(c, "0.29")  # 0.29 * 1e8 is 28999999.999999996 as a float
    pending = {t.address: t for t in backend.pending_transfers([a, b, c], timezone.now())}
    assert {k: t.amount_base_units for k, t in pending.items()} == {
        a: 10_000_000,
        b: 20_000_000,
        c: 29_000_000,
    }
    assert all(t.block_height is None and t.seen_unconfirmed_at is not None for t in pending.values())
    assert {pending[a].tx_hash, pending[b].tx_hash, pending[c].tx_hash} == {txid, txid_c}
    assert pending[a].output_index != pending[b].output_index

    [block_hash] = node.mine(1)
    height = node.height()
    assert list(backend.pending_transfers([a, b, c], timezone.now())) == []
    mined = {t.address: t for t in backend.transfers([a, b, c, node.new_address()], height, height)}
    assert {k: t.amount_base_units for k, t in mined.items()} == {a: 10_000_000, b: 20_000_000, c: 29_000_000}
    tip = backend.tip()
    assert (tip.height, tip.hash) == (height, block_hash) and backend.block_ref(height) == tip
    for t in mined.values():
        assert (t.block_height, t.block_hash, t.block_time) == (height, block_hash, tip.time)
        raw = node.rpc("getrawtransaction", t.tx_hash, True)
        assert raw["vout"][t.output_index]["scriptPubKey"]["hex"] == witness_script_hex(
            t.address, REGTEST_HRP
        )
        assert raw["blockhash"] == block_hash
        assert t.position_in_block in (1, 2)
    assert list(backend.transfers([a], height + 1, height)) == []


def test_conversion_and_errors():
    assert to_satoshi(Decimal("0.29")) == 29_000_000 and to_satoshi("21000000") == 2_100_000_000_000_000
    with pytest.raises(TypeError):
        to_satoshi(0.29)
    with pytest.raises(ValueError):
        to_satoshi(Decimal("0.000000001"))
    with pytest.raises(ValueError):
        witness_script_hex("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", REGTEST_HRP)  # another HRP
    assert witness_script_hex("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "bc") == (
        "0014c0cebcd6c3d3ca8c75dc5ec62ebe55330ef910e2"
    )
    with pytest.raises(BitcoinRpcError, match="cannot reach"):
        BitcoinCoreBackend(NETWORK, "http://u:p@127.0.0.1:9/", hrp=REGTEST_HRP, timeout_s=2).tip()


def test_rpc_errors_are_clear(litecoind):
    bad = BitcoinCoreBackend(NETWORK, litecoind.url.replace(litecoind.rpc_password, "wrong"), hrp=REGTEST_HRP)
    with pytest.raises(BitcoinRpcError, match="refused the RPC credentials"):
        bad.tip()
    backend = BitcoinCoreBackend(NETWORK, litecoind.url, hrp=REGTEST_HRP)
    with pytest.raises(BitcoinRpcError, match=r"getblockhash\[10000\] failed: .*\(code -8\)"):
        backend.block_ref(10_000)


def test_replaced_unconfirmed_payment_stops_counting_and_goes_back(regtest):
    """The customer replaces the payment (RBF) with a transaction that pays someone else: the original
    is gone from the mempool, its observation stops counting, and the intent goes back to awaiting."""
    node, backend = regtest
    intent = new_intent("0.5")
    txid = node.send(intent.address.address, "0.5", replaceable=True)
    scan(backend)
    assert state(intent) == "detected"
    replaced_by = node.rpc("sendrawtransaction", node.conflicting_transaction(txid))
    assert_gone_and_back_to_awaiting(node, backend, intent, txid)
    node.mine(2)
    scan(backend)
    assert state(intent) == "awaiting_payment"
    assert node.rpc("getrawtransaction", replaced_by, True)["confirmations"] == 2


def assert_gone_and_back_to_awaiting(node: LitecoindNode, backend, intent: PaymentIntent, txid: str) -> None:
    """The payment left the mempool; the next scan stops counting it and takes the intent back."""
    assert txid not in node.rpc("getrawmempool")
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "detected", "awaiting_payment"]
    assert ChainObservation.objects.get(tx_hash=txid).canonical is False
    assert event_types(intent)[-1] == "payment.awaiting_payment"


def test_dropped_unconfirmed_payment_when_a_double_spend_is_mined(regtest):
    """No RBF: the payment sits in the mempool, and a miner includes a conflicting transaction instead.
    The node evicts the payment; the scanner sees it gone, the observation stops counting, and the
    intent goes back to awaiting with an event, and stays there as the conflict confirms."""
    node, backend = regtest
    intent = new_intent("0.3")
    txid = node.send(intent.address.address, "0.3")
    assert node.rpc("getrawtransaction", txid, True).get("vin")
    scan(backend)
    assert state(intent) == "detected"
    conflict = node.conflicting_transaction(txid)
    node.rpc("generateblock", node.new_address(), [conflict])
    assert_gone_and_back_to_awaiting(node, backend, intent, txid)
    node.mine(2)
    scan(backend)
    assert state(intent) == "awaiting_payment"
    assert ChainObservation.objects.filter(intent=intent, canonical=True).count() == 0

"""Chain watching through the Esplora REST backend, against a local Esplora server that translates a real
litecoind regtest node: mempool then blocks become observations, a block invalidated under a paid payment
sends it back until it is mined again, and a block of more than one page (25 transactions) is read whole,
with the same transfers and positions as the Core-RPC backend finds; a spend of a credited output, in a
block and in the mempool, is the same Spend through both backends, with the node's own fee."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from payments.chains.base import NO_SPENDS, Destination, Spend, SpendWatch, Transfer
from payments.chains.bitcoin_rpc import BitcoinCoreBackend, to_satoshi
from payments.chains.esplora import PAGE_SIZE, EsploraBackend, EsploraError
from payments.models import Network, NetworkAsset
from payments.scanning import network_scan
from payments.services import IntentInput, payment_intent_create
from reconciliation.close import close_day
from tests.factories import make_merchant
from tests.integration.test_scan_litecoin import NETWORK, mempool_then_blocks_then_reorg_and_back
from tests.nodes.esplora_server import EsploraServer
from tests.nodes.litecoind import REGTEST_HRP

pytestmark = pytest.mark.django_db


@pytest.fixture
def esplora(litecoind):
    """A local Esplora API over the litecoind regtest node (fails, never skips, if the node cannot run)."""
    with EsploraServer(litecoind) as server:
        yield server


@pytest.fixture
def regtest(litecoind, esplora):
    """litecoin-regtest watched through Esplora, scanning from the node's tip; LTC needs 2 confirmations."""
    network = Network.objects.get(code=NETWORK)
    assert network.bech32_hrp == REGTEST_HRP
    network.rpc_url = f"esplora+{esplora.url}"
    network.scan_start_height = litecoind.height()
    network.save()
    NetworkAsset.objects.filter(network=network, asset__code="LTC").update(default_confirmations=2)
    return litecoind, EsploraBackend(network.code, esplora.url, hrp=network.bech32_hrp)


def test_mempool_then_blocks_then_reorg_and_back(regtest):
    mempool_then_blocks_then_reorg_and_back(*regtest)


def test_block_of_several_pages(litecoind, esplora):
    node = litecoind
    node.mine(35)  # 36 mature coinbases: each payment below spends a confirmed coin, no long mempool chain
    backend = EsploraBackend(NETWORK, esplora.url, hrp=REGTEST_HRP)
    core = BitcoinCoreBackend(NETWORK, node.url, hrp=REGTEST_HRP)
    addresses = [node.new_address() for _ in range(30)]
    watched = addresses[::2] + addresses[25:]  # every other one, and all of the last five
    amounts = {
        address: Decimal("0.001") * (i + 1) + Decimal("0.00000007") for i, address in enumerate(addresses)
    }
    txids = {address: node.send(address, str(amount)) for address, amount in amounts.items()}
    assert len(set(txids.values())) == 30

    pending = {t.address: t for t in backend.pending_transfers(watched, timezone.now())}
    assert set(pending) == set(watched)
    assert {a: t.amount_base_units for a, t in pending.items()} == {
        a: int(amounts[a] * 100_000_000) for a in watched
    }
    assert set(pending.values()) == set(
        core.pending_transfers(watched, next(iter(pending.values())).seen_unconfirmed_at)
    )

    [block_hash] = node.mine(1)
    height = node.height()
    block = node.rpc("getblock", block_hash, 1)
    assert block["nTx"] == 31 > PAGE_SIZE  # the coinbase and the 30 payments: two pages
    order = {txid: i for i, txid in enumerate(block["tx"])}
    # the block orders its transactions as it likes: watch at least one of the second page's
    second_page = sorted(a for a, txid in txids.items() if order[txid] >= PAGE_SIZE)
    watched = sorted(set(watched) | {second_page[0]})
    esplora.requests.clear()

    found = list(backend.transfers(watched, height, height))
    assert sorted(t.address for t in found) == sorted(set(watched))
    for t in found:
        assert (t.tx_hash, t.amount_base_units) == (txids[t.address], int(amounts[t.address] * 100_000_000))
        assert t.position_in_block == order[t.tx_hash] and t.position_in_block >= 1
        assert (t.block_height, t.block_hash) == (height, block_hash)
        raw = node.rpc("getrawtransaction", t.tx_hash, True)
        assert raw["vout"][t.output_index]["scriptPubKey"]["addresses"] == [t.address]
    assert any(t.position_in_block >= PAGE_SIZE for t in found)  # some come from the second page
    assert [p for p in esplora.requests if "/txs/" in p] == [
        f"/block/{block_hash}/txs/0",
        f"/block/{block_hash}/txs/25",
    ]
    # The same Transfers, field for field, as the Core-RPC backend reads from the node.
    assert set(found) == set(core.transfers(watched, height, height))

    assert list(backend.pending_transfers(watched, timezone.now())) == []
    assert backend.live_transactions(set(txids.values())) == set(txids.values())  # mined
    tip = backend.tip()
    assert (tip.height, tip.hash) == (height, block_hash) and tip == core.tip() == backend.block_ref(height)


def test_dropped_and_errors(litecoind, esplora):
    node = litecoind
    backend = EsploraBackend(NETWORK, esplora.url, hrp=REGTEST_HRP)
    address = node.new_address()
    txid = node.send(address, "0.29", replaceable=True)  # 0.29 * 1e8 is 28999999.999999996 as a float
    [pending] = backend.pending_transfers([address], timezone.now())
    assert (pending.tx_hash, pending.amount_base_units, pending.block_height) == (txid, 29_000_000, None)
    assert backend.live_transactions({txid, "ab" * 32}) == {txid}  # the unknown one: 404, dropped
    assert backend.live_transactions(set()) == set()
    replacement = node.rpc("bumpfee", txid)["txid"]  # RBF: the first transaction leaves the mempool
    assert backend.live_transactions({txid, replacement}) == {replacement}
    [pending] = backend.pending_transfers([address], timezone.now())
    assert (pending.tx_hash, pending.amount_base_units) == (replacement, 29_000_000)

    with pytest.raises(EsploraError, match="HTTP 404") as info:
        backend.block_ref(10_000)
    assert info.value.status == 404
    with pytest.raises(EsploraError, match="cannot reach Esplora"):
        EsploraBackend(NETWORK, "http://127.0.0.1:9", hrp=REGTEST_HRP, timeout_s=2).tip()
    with pytest.raises(ValueError):
        EsploraBackend(NETWORK, "ftp://example.org", hrp=REGTEST_HRP)


# --- spends ------------------------------------------------------------------------------------------


def esplora_get(esplora: EsploraServer, path: str):
    with urllib.request.urlopen(esplora.url + path, timeout=10) as response:
        return json.loads(response.read())


def output_paying(node, txid: str, address: str) -> int:
    """The index of the output of `txid` that pays `address`."""
    raw = node.rpc("getrawtransaction", txid, True)
    [n] = [o["n"] for o in raw["vout"] if o["scriptPubKey"].get("addresses") == [address]]
    return int(n)


def spend_outpoint(node, outpoints: list[tuple[str, int]]) -> tuple[str, int]:
    """Spend exactly these outpoints with a raw transaction of two outputs (0.6 LTC, and the rest less a
    0.00012345 LTC fee), signed by the node's wallet and sent. Returns (its txid, its fee in satoshi as the
    node's mempool reports it)."""
    total = sum(
        Decimal(node.rpc("getrawtransaction", txid, True)["vout"][n]["value"]) for txid, n in outpoints
    )
    change = total - Decimal("0.6") - Decimal("0.00012345")
    unsigned = node.rpc(
        "createrawtransaction",
        [{"txid": txid, "vout": n} for txid, n in outpoints],
        [{node.new_address(): Decimal("0.6")}, {node.new_address(): change}],
    )
    signed = node.rpc("signrawtransactionwithwallet", unsigned)
    assert signed["complete"]
    txid = node.rpc("sendrawtransaction", signed["hex"])
    fee = to_satoshi(node.rpc("getmempoolentry", txid)["fees"]["base"])  # the node's figure, not ours
    assert fee == 12_345
    return txid, fee


def credit(node, amount: str = "1.0") -> tuple[str, str, int]:
    """A confirmed output of `amount` LTC to a fresh wallet address: (address, txid, vout). The wallet locks
    it, so its own later sends cannot spend it before the test does."""
    address = node.new_address()
    txid = node.send(address, amount)
    node.mine(1)
    n = output_paying(node, txid, address)
    assert node.rpc("lockunspent", False, [{"txid": txid, "vout": n}])
    return address, txid, n


def expected_destinations(node, txid: str) -> tuple[Destination, ...]:
    """The spending transaction's outputs as the node decodes them."""
    raw = node.rpc("getrawtransaction", txid, True)
    return tuple(
        Destination(
            index=int(o["n"]),
            address=o["scriptPubKey"]["addresses"][0],
            amount_base_units=to_satoshi(o["value"]),
            script=o["scriptPubKey"]["hex"],
        )
        for o in raw["vout"]
    )


def test_spend_in_a_block_is_the_same_through_both_backends(litecoind, esplora):
    node = litecoind
    backend = EsploraBackend(NETWORK, esplora.url, hrp=REGTEST_HRP)
    core = BitcoinCoreBackend(NETWORK, node.url, hrp=REGTEST_HRP)
    address, funding, n = credit(node)
    spends = SpendWatch(outpoints={(funding, n): (address, 100_000_000)})
    spend_txid, fee = spend_outpoint(node, [(funding, n)])
    wallet_fee = to_satoshi(-node.rpc("gettransaction", spend_txid)["fee"])
    assert wallet_fee == fee

    [block_hash] = node.mine(1)
    height = node.height()
    block = node.rpc("getblock", block_hash, 1)
    esplora.requests.clear()

    [spend] = backend.activity([], spends, height, height)
    assert spend == Spend(
        network_code=NETWORK,
        tx_hash=spend_txid,
        index=0,
        address=address,
        amount_base_units=100_000_000,
        spent_tx_hash=funding,
        spent_output_index=n,
        destinations=expected_destinations(node, spend_txid),
        fee_base_units=fee,
        block_height=height,
        block_hash=block_hash,
        block_time=datetime.fromtimestamp(block["time"], tz=UTC),
        position_in_block=block["tx"].index(spend_txid),
        seen_unconfirmed_at=None,
    )
    assert spend.position_in_block >= 1
    assert spend.destinations[0].amount_base_units == 60_000_000
    assert sum(d.amount_base_units for d in spend.destinations) + fee == 100_000_000
    # The same Spend, field for field, as the Core-RPC backend finds (its fee read from the inputs' txs).
    assert [spend] == list(core.activity([], spends, height, height))
    # Esplora read the block page, not each transaction: the fee came with the page.
    assert not [p for p in esplora.requests if p.startswith("/tx/")]

    # The server's transaction is Esplora's: the input's resolved prevout, and the fee.
    tx = esplora_get(esplora, f"/tx/{spend_txid}")
    assert tx["fee"] == fee
    [vin] = tx["vin"]
    funding_out = esplora_get(esplora, f"/tx/{funding}")["vout"][n]
    assert vin["prevout"] == funding_out
    assert vin["prevout"]["scriptpubkey_address"] == address
    assert vin["prevout"]["value"] == 100_000_000
    assert set(vin["prevout"]) == {
        "scriptpubkey",
        "scriptpubkey_asm",
        "scriptpubkey_type",
        "scriptpubkey_address",
        "value",
    }
    assert vin["prevout"]["scriptpubkey_type"] == "v0_p2wpkh"
    [coinbase] = esplora_get(esplora, f"/block/{block_hash}/txs/0")[:1]
    assert coinbase["vin"][0]["is_coinbase"] and coinbase["vin"][0]["prevout"] is None
    assert coinbase["fee"] == 0
    assert sum(out["value"] for out in coinbase["vout"]) >= fee  # the subsidy plus this block's fees


def test_pending_spend_is_the_same_through_both_backends(litecoind, esplora):
    node = litecoind
    backend = EsploraBackend(NETWORK, esplora.url, hrp=REGTEST_HRP)
    core = BitcoinCoreBackend(NETWORK, node.url, hrp=REGTEST_HRP)
    address, funding, n = credit(node)
    spends = SpendWatch(outpoints={(funding, n): (address, 100_000_000)})
    spend_txid, fee = spend_outpoint(node, [(funding, n)])
    assert spend_txid in node.rpc("getrawmempool", False)

    now = timezone.now()
    [spend] = backend.pending_activity([], spends, now)
    assert isinstance(spend, Spend)
    assert (spend.tx_hash, spend.index, spend.address, spend.amount_base_units) == (
        spend_txid,
        0,
        address,
        100_000_000,
    )
    assert (spend.spent_tx_hash, spend.spent_output_index) == (funding, n)
    assert spend.destinations == expected_destinations(node, spend_txid)
    assert spend.fee_base_units == fee == to_satoshi(node.rpc("getmempoolentry", spend_txid)["fees"]["base"])
    assert (spend.block_height, spend.block_hash, spend.block_time, spend.position_in_block) == (
        None,
        "",
        None,
        None,
    )
    assert spend.seen_unconfirmed_at == now
    # Field for field the Core-RPC backend's (asked at a later moment: only seen_unconfirmed_at differs).
    later = timezone.now()
    [from_core] = core.pending_activity([], spends, later)
    assert from_core.seen_unconfirmed_at == later
    assert replace(from_core, seen_unconfirmed_at=now) == spend
    # Once mined, nothing is pending.
    node.mine(1)
    assert list(backend.pending_activity([], spends, timezone.now())) == []


def test_spend_with_an_unwatched_input_takes_esplora_fee(litecoind, esplora):
    """A spend whose other input the gateway never credited: Esplora's `fee` (from the resolved prevouts) is
    the only way the Esplora backend knows it; it matches the node's, and the Core-RPC backend's."""
    node = litecoind
    backend = EsploraBackend(NETWORK, esplora.url, hrp=REGTEST_HRP)
    core = BitcoinCoreBackend(NETWORK, node.url, hrp=REGTEST_HRP)
    address, funding, n = credit(node)
    _, other, m = credit(node, "0.25")
    spends = SpendWatch(outpoints={(funding, n): (address, 100_000_000)})
    spend_txid, fee = spend_outpoint(node, [(other, m), (funding, n)])

    [pending] = backend.pending_activity([], spends, timezone.now())
    assert (pending.index, pending.fee_base_units) == (1, fee)
    [block_hash] = node.mine(1)
    height = node.height()
    [spend] = backend.activity([], spends, height, height)
    assert (spend.tx_hash, spend.index, spend.block_hash, spend.fee_base_units) == (
        spend_txid,
        1,
        block_hash,
        fee,
    )
    assert sum(d.amount_base_units for d in spend.destinations) + fee == 125_000_000
    assert [spend] == list(core.activity([], spends, height, height))


def payment_then_spend(node) -> tuple[str, str, int, str, int, int]:
    """A payment to a fresh address and, in the next block, a transaction spending it (a sweep): (address,
    payment txid, its vout, spend txid, the range's first and last heights)."""
    start = node.height() + 1
    address = node.new_address()
    payment = node.send(address, "1.0")
    node.mine(1)
    n = output_paying(node, payment, address)
    spend_txid, _fee = spend_outpoint(node, [(payment, n)])
    node.mine(1)
    return address, payment, n, spend_txid, start, node.height()


def test_payment_and_its_spend_in_one_range(litecoind, esplora):
    """Tracking on (some other credited output is watched): the payment's output joins the watch as the scan
    credits it, and its spend in the next block is found in the same call, by both backends alike."""
    node = litecoind
    backend = EsploraBackend(NETWORK, esplora.url, hrp=REGTEST_HRP)
    core = BitcoinCoreBackend(NETWORK, node.url, hrp=REGTEST_HRP)
    address, payment, n, spend_txid, start, end = payment_then_spend(node)
    spends = SpendWatch(outpoints={("ab" * 32, 0): (node.new_address(), 1)})  # never spent on this chain

    found = list(backend.activity([address], spends, start, end))
    assert [type(item) for item in found] == [Transfer, Spend]
    transfer, spend = found
    assert (transfer.tx_hash, transfer.output_index, transfer.amount_base_units) == (payment, n, 100_000_000)
    assert (spend.tx_hash, spend.spent_tx_hash, spend.spent_output_index, spend.address) == (
        spend_txid,
        payment,
        n,
        address,
    )
    assert spend.block_height == transfer.block_height + 1 == end
    assert found == list(core.activity([address], spends, start, end))
    assert spends.outpoints == {("ab" * 32, 0): spends.outpoints[("ab" * 32, 0)]}  # the caller's is untouched


def test_payment_and_its_spend_in_one_range_from_an_empty_spend_watch(litecoind, esplora):
    """What `scan_watch.spend_watch` gives a network with nothing credited yet: SpendWatch(outpoints={}). It
    still tracks spends (unlike NO_SPENDS): the payment's output joins the watch as the scan credits it."""
    node = litecoind
    backend = EsploraBackend(NETWORK, esplora.url, hrp=REGTEST_HRP)
    core = BitcoinCoreBackend(NETWORK, node.url, hrp=REGTEST_HRP)
    address, payment, n, spend_txid, start, end = payment_then_spend(node)
    spends = SpendWatch(outpoints={})

    assert spends and not NO_SPENDS
    found = list(backend.activity([address], spends, start, end))
    assert found == list(core.activity([address], spends, start, end))
    assert [type(item) for item in found] == [Transfer, Spend]
    transfer, spend = found
    assert (transfer.tx_hash, transfer.output_index, transfer.block_height) == (payment, n, start)
    assert (spend.tx_hash, spend.spent_tx_hash, spend.spent_output_index) == (spend_txid, payment, n)
    assert (spend.address, spend.amount_base_units, spend.block_height) == (address, 100_000_000, end)
    assert spends.outpoints == {}  # the caller's watch is not changed by the pass
    # NO_SPENDS, by contrast, looks for no outflows at all: only the payment.
    assert list(backend.activity([address], NO_SPENDS, start, end)) == [transfer]
    assert list(core.activity([address], NO_SPENDS, start, end)) == [transfer]


def test_a_daily_close_through_esplora_balances_against_its_unspent_outputs(regtest, esplora):
    """The close's check asks Esplora (`/address/<a>/utxo`) for the payment addresses' balances."""
    node, backend = regtest
    merchant = make_merchant()
    na = NetworkAsset.objects.get(network__code=NETWORK, asset__code="LTC")
    intents = [
        payment_intent_create(
            merchant=merchant,
            data=IntentInput(price_amount=Decimal(a), price_currency="LTC", network_asset=na),
            now=timezone.now(),
        )
        for a in ("0.5", "0.25")
    ]
    for intent, amount in zip(intents, ("0.5", "0.25"), strict=True):
        node.send(intent.address.address, amount)
    node.mine(2)
    network_scan(backend=backend, now=timezone.now())
    now = timezone.now()
    [close] = [
        c
        for c in close_day(day=now.date(), now=now, backend_for=lambda n: backend, merchant_id=merchant.pk)
        if c.network_asset_id == na.pk
    ]
    assert (close.status, int(close.chain_balance), int(close.received)) == (
        "balanced",
        75_000_000,
        75_000_000,
    )
    asked = [p for p in esplora.requests if p.startswith("/address/")]
    assert sorted(asked) == sorted(f"/address/{i.address.address}/utxo" for i in intents)

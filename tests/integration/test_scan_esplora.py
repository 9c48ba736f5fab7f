"""Chain watching through the Esplora REST backend, against a local Esplora server that translates a real
litecoind regtest node: mempool then blocks become observations, a block invalidated under a paid payment
sends it back until it is mined again, and a block of more than one page (25 transactions) is read whole,
with the same transfers and positions as the Core-RPC backend finds."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from payments.chains.bitcoin_rpc import BitcoinCoreBackend
from payments.chains.esplora import PAGE_SIZE, EsploraBackend, EsploraError
from payments.models import Network, NetworkAsset
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

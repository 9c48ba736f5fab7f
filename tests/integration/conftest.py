"""Fixtures shared by the integration tests on real nodes."""

from __future__ import annotations

import pytest

from payments.chains.bitcoin_rpc import BitcoinCoreBackend
from payments.chains.evm import EvmBackend
from payments.models import Network, NetworkAsset
from tests.nodes.litecoind import REGTEST_HRP, LitecoindNode


@pytest.fixture
def ltc_regtest(litecoind: LitecoindNode, settings):
    """litecoin-regtest pointed at a fresh litecoind (Core RPC), scanning from its tip, 2 confirmations, a
    fixed LTC rate (settlements' fiat values without the network); the node and the scanner's backend."""
    settings.GATEWAY_RATE_SOURCE = "fixed"
    settings.GATEWAY_FIXED_RATES = "LTC-USD=80.25"
    network = Network.objects.get(code="litecoin-regtest")
    network.rpc_url = litecoind.url
    network.scan_start_height = litecoind.height()
    network.save()
    NetworkAsset.objects.filter(network=network, asset__code="LTC").update(default_confirmations=2)
    return litecoind, BitcoinCoreBackend("litecoin-regtest", litecoind.url, hrp=REGTEST_HRP)


@pytest.fixture
def evm_chain(local_usdc):
    """anvil with the 6-decimal token as evm-local's USDC; the node, the token and the scanner's backend."""
    node, token = local_usdc
    return node, token, EvmBackend("evm-local", node.url)

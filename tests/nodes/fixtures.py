"""pytest fixtures for a real anvil node and a deployed TestUSDC; load them from a conftest with
``pytest_plugins = ["tests.nodes.fixtures"]``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3.contract import Contract

from devchain.anvil import AnvilNode, deploy_token


@pytest.fixture
def anvil() -> Iterator[AnvilNode]:
    """A fresh anvil (chain id 31337, automine) for one test; stopped afterwards."""
    with AnvilNode(chain_id=31337) as node:
        yield node


@pytest.fixture
def anvil_token(anvil: AnvilNode) -> tuple[AnvilNode, Contract]:
    """(node, TestUSDC contract) deployed by ``node.accounts[0]`` at its nonce 0; nothing minted yet."""
    return anvil, deploy_token(anvil.w3, anvil.accounts[0])


@pytest.fixture
def local_usdc(anvil_token: tuple[AnvilNode, Contract], db) -> tuple[AnvilNode, Contract]:
    """The `evm-local` network enabled and pointed at this anvil (scanned from its current block), USDC on
    it at the deployed contract (6 decimals, 2 confirmations), and 1000 USDC minted to ``accounts[1]``."""
    from devchain.anvil import mint, token_units
    from payments.models import Asset, Network, NetworkAsset

    node, token = anvil_token
    network = Network.objects.get(code="evm-local")
    network.rpc_url = node.url
    network.scan_start_height = node.block_number()
    network.enabled = True  # development networks start disabled
    network.save()
    NetworkAsset.objects.update_or_create(
        network=network,
        asset=Asset.objects.get(code="USDC"),
        defaults={"contract_address": token.address.lower(), "decimals": 6, "default_confirmations": 2},
    )
    mint(node.w3, token, node.accounts[0], node.accounts[1], token_units("1000"))
    return node, token

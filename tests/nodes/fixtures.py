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

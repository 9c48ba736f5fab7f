"""pytest fixture for a real litecoind in regtest; load it from a conftest with
``pytest_plugins = ["tests.nodes.fixtures_litecoin"]``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.nodes.litecoind import LitecoindNode


@pytest.fixture
def litecoind() -> Iterator[LitecoindNode]:
    """A fresh litecoind regtest node for one test: a legacy wallet with 101 blocks mined to it (50 LTC
    spendable); stopped and its datadir removed afterwards. Fails (never skips) if litecoind cannot run."""
    with LitecoindNode() as node:
        yield node

"""The one small interface every chain backend implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class BlockRef:
    height: int
    hash: str
    time: datetime


@dataclass(frozen=True)
class Transfer:
    """One output (Bitcoin-family vout) or transfer (EVM log index, or -1 for the native value) to an
    address, as a chain showed it. `block_height` is None for an unconfirmed transaction."""

    network_code: str
    tx_hash: str
    output_index: int
    address: str
    amount_base_units: int
    token_contract: str = ""
    block_height: int | None = None
    block_hash: str = ""
    block_time: datetime | None = None
    position_in_block: int | None = None
    seen_unconfirmed_at: datetime | None = None


class ChainNodeError(RuntimeError):
    """A chain node could not be reached or answered an HTTP/RPC error. The message names the network and
    the node by its redacted URL (`redaction.redact_url`): never its credentials."""


class TransactionNotFound(LookupError):
    """The node does not know the transaction (neither in a block on its best chain nor in its mempool)."""


class ChainBackend(Protocol):
    network_code: str

    def tip(self) -> BlockRef:
        """The best block."""
        ...

    def block_ref(self, height: int) -> BlockRef:
        """The block at `height` on the best chain (used to find a fork point after a reorg)."""
        ...

    def transfers(self, watched: Collection[str], start: int, end: int) -> Iterator[Transfer]:
        """Transfers to any watched address in blocks start..end (inclusive), of any asset."""
        ...

    def pending_transfers(self, watched: Collection[str], now: datetime) -> Iterator[Transfer]:
        """Unconfirmed transfers to watched addresses, where the chain exposes a mempool."""
        ...

    def live_transactions(self, tx_hashes: Collection[str]) -> set[str]:
        """Which of these (unconfirmed when last seen) are still in the mempool or in a block."""
        ...

    def transaction_transfers(self, tx_hash: str, watched: Collection[str], now: datetime) -> list[Transfer]:
        """The transfers of one transaction to watched addresses, exactly as a scan would have found them
        (in a block: its height, hash, time and the transaction's position; unconfirmed: seen `now`).
        An empty list: the transaction pays none of them. Raises TransactionNotFound."""
        ...

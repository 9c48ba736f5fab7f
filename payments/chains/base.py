"""The one small interface every chain backend implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
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
    sender: str = ""  # EVM: who sent it (the log's `from`, the transaction's sender); "" Bitcoin-family


@dataclass(frozen=True)
class Destination:
    """Where an outflow's transaction sent value: one output (Bitcoin-family vout n, with its script) or one
    transfer (EVM: the log index, or -1 for the native value). `address` is as the chain shows it (EVM in
    lower case); empty for an output without one (OP_RETURN, bare multisig)."""

    index: int
    address: str
    amount_base_units: int
    token_contract: str = ""
    script: str = ""


@dataclass(frozen=True)
class Spend:
    """Value leaving a watched address: an input spending an output the gateway credited (Bitcoin-family:
    `index` is the input's, `spent_*` name the output), an ERC-20 `Transfer` log from a watched address
    (EVM: the log index), or a transaction a watched address sent (EVM: index -1, its native value, which
    is 0 for a token sweep or a reverted transaction, and the gas it paid).

    `destinations` and `fee_base_units` describe the whole transaction (every Spend of one transaction
    carries the same): all its outputs (Bitcoin-family) or this transfer's recipient (EVM), and the network
    fee in the native coin's base units (None if the node could not say). `fee_payer` is the EVM account
    that paid the gas ("" for Bitcoin-family, where the inputs pay it)."""

    network_code: str
    tx_hash: str
    index: int
    address: str
    amount_base_units: int
    token_contract: str = ""
    spent_tx_hash: str = ""
    spent_output_index: int | None = None
    destinations: tuple[Destination, ...] = ()
    fee_base_units: int | None = None
    fee_payer: str = ""
    block_height: int | None = None
    block_hash: str = ""
    block_time: datetime | None = None
    position_in_block: int | None = None
    seen_unconfirmed_at: datetime | None = None


@dataclass(frozen=True)
class SpendWatch:
    """What outflows a scan looks for. Bitcoin-family: the credited outputs not yet spent, (txid, vout) ->
    (address, satoshi); outputs the same scan credits are added as it goes (a sweep in the block after the
    payment is found in one pass). EVM: the addresses whose sends are recorded (lower case)."""

    outpoints: Mapping[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    senders: frozenset[str] = frozenset()
    tracking: bool = True  # False: look for no outflows at all (NO_SPENDS)

    def __bool__(self) -> bool:
        """Whether spends are looked for: an empty watch still finds those of outputs credited in the pass."""
        return self.tracking


NO_SPENDS = SpendWatch(tracking=False)


class ChainNodeError(RuntimeError):
    """A chain node could not be reached or answered an HTTP/RPC error. The message names the network and
    the node by its redacted URL (`redaction.redact_url`): never its credentials."""


class TransactionNotFound(LookupError):
    """The node does not know the transaction (neither in a block on its best chain nor in its mempool)."""


class TransactionPending(TransactionNotFound):
    """The node knows the transaction only in its mempool, where a chain whose payments count in a block
    (EVM) does not look."""


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

    def activity(
        self, watched: Collection[str], spends: SpendWatch, start: int, end: int
    ) -> Iterator[Transfer | Spend]:
        """`transfers` and the spends `spends` asks for, in blocks start..end, in one pass over them."""
        ...

    def pending_activity(
        self, watched: Collection[str], spends: SpendWatch, now: datetime
    ) -> Iterator[Transfer | Spend]:
        """`pending_transfers` and the unconfirmed spends `spends` asks for."""
        ...

    def live_transactions(self, tx_hashes: Collection[str]) -> set[str]:
        """Which of these (unconfirmed when last seen) are still in the mempool or in a block."""
        ...

    def balances(
        self, addresses: Collection[str], token_contract: str = "", *, height: int | None = None
    ) -> tuple[int, dict[str, int]]:
        """What the chain itself says each address holds of one asset (`token_contract` "" for the native
        coin): (the block's height, {address as given: base units}); an address holding nothing may be
        left out. At `height` where the chain can say (EVM: `eth_getBalance` / `balanceOf` at that block),
        else at its best block (Bitcoin-family: the addresses' unspent outputs in blocks, no mempool)."""
        ...

    def transaction_transfers(
        self, tx_hash: str, watched: Collection[str], now: datetime, *, block_hash: str = ""
    ) -> list[Transfer]:
        """The transfers of one transaction to watched addresses, exactly as a scan would have found them
        (in a block: its height, hash, time and the transaction's position; unconfirmed: seen `now`).
        An empty list: the transaction pays none of them. `block_hash`: where it was last seen, a hint for
        a node that indexes only its wallet's transactions. Raises TransactionNotFound."""
        ...

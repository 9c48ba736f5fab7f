"""What Bitcoin-family transactions mean for the gateway, whichever backend read them (Core RPC, Esplora):
outputs paying a watched script become `Transfer`s, inputs spending an output the gateway credited become
`Spend`s carrying the spending transaction's outputs and fee.

Backends turn their JSON into `UtxoTx` and call `block_activity` / `mempool_activity`; the matching is
here once. Outputs are matched on their scriptPubKey hex, inputs on the outpoint (txid, vout) they spend.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime

from .base import NO_SPENDS, BlockRef, Destination, Spend, Transfer

Outpoint = tuple[str, int]
# (txid, vout) -> (address, satoshi) of the credited outputs not yet spent; None: spends are not tracked
Outpoints = MutableMapping[Outpoint, tuple[str, int]] | None


@dataclass(frozen=True)
class UtxoTx:
    """One transaction as the matching needs it. `outputs`: (vout n, scriptPubKey hex, satoshi, address
    as the node shows it or ""); `inputs`: the outpoints it spends in input order (() for a coinbase);
    `fee` in satoshi when the source says (Esplora; Bitcoin Core 22+'s `getblock 2`), else None."""

    txid: str
    outputs: tuple[tuple[int, str, int, str], ...]
    inputs: tuple[Outpoint, ...] = ()
    fee: int | None = None


# Given a spending transaction and the values of the inputs already known, its fee (None if unknown).
FeeOf = Callable[[UtxoTx, Mapping[Outpoint, int]], int | None]


def tx_activity(
    network_code: str,
    tx: UtxoTx,
    scripts: Mapping[str, str],
    outpoints: Outpoints,
    fee_of: FeeOf,
    *,
    block: BlockRef | None = None,
    position: int | None = None,
    seen_at: datetime | None = None,
    credit: bool = True,
    spend: bool = True,
) -> Iterator[Transfer | Spend]:
    """The transfers to watched scripts (`credit`) and the spends of tracked outpoints (`spend`) of one
    transaction, in a block (`block`, `position`) or unconfirmed (`seen_at`). Outputs it credits join
    `outpoints`, so a later transaction spending them is seen in the same pass."""
    where = {
        "block_height": block.height if block else None,
        "block_hash": block.hash if block else "",
        "block_time": block.time if block else None,
        "position_in_block": position,
        "seen_unconfirmed_at": None if block else seen_at,
    }
    if spend and outpoints is not None:
        spent = [(i, op, outpoints.pop(op)) for i, op in enumerate(tx.inputs) if op in outpoints]
        if spent:
            fee = tx.fee if tx.fee is not None else fee_of(tx, {op: amount for _, op, (_, amount) in spent})
            destinations = tuple(
                Destination(index=n, address=address, amount_base_units=amount, script=script)
                for n, script, amount, address in tx.outputs
            )
            for i, (prev_txid, prev_n), (address, amount) in spent:
                yield Spend(
                    network_code=network_code,
                    tx_hash=tx.txid,
                    index=i,
                    address=address,
                    amount_base_units=amount,
                    spent_tx_hash=prev_txid,
                    spent_output_index=prev_n,
                    destinations=destinations,
                    fee_base_units=fee,
                    **where,
                )
    if credit:
        for n, script, amount, _ in tx.outputs:
            address = scripts.get(script)
            if address is None:
                continue
            yield Transfer(
                network_code=network_code,
                tx_hash=tx.txid,
                output_index=n,
                address=address,
                amount_base_units=amount,
                **where,
            )
            if outpoints is not None:
                outpoints[(tx.txid, n)] = (address, amount)


def block_activity(
    network_code: str,
    block: BlockRef,
    txs: Iterable[UtxoTx],
    scripts: Mapping[str, str],
    outpoints: Outpoints,
    fee_of: FeeOf,
) -> Iterator[Transfer | Spend]:
    """`tx_activity` of a block's transactions, in block order."""
    for position, tx in enumerate(txs):
        yield from tx_activity(network_code, tx, scripts, outpoints, fee_of, block=block, position=position)


def mempool_activity(
    network_code: str,
    txs: Iterable[UtxoTx],
    scripts: Mapping[str, str],
    outpoints: Outpoints,
    fee_of: FeeOf,
    now: datetime,
) -> Iterator[Transfer | Spend]:
    """`tx_activity` of mempool transactions. Every credit is found first (a mempool's order need not put
    a payment before the sweep that spends it), but the spends are reported before the credits, as within
    one transaction: a credit that comes from the merchant's own addresses is known to be one when it is
    recorded."""
    txs = list(txs)
    credits = [
        item
        for tx in txs
        for item in tx_activity(network_code, tx, scripts, outpoints, fee_of, seen_at=now, spend=False)
    ]
    if outpoints is not None:
        for tx in txs:
            yield from tx_activity(network_code, tx, scripts, outpoints, fee_of, seen_at=now, credit=False)
    yield from credits


def transfers_only(items: Iterable[Transfer | Spend]) -> Iterator[Transfer]:
    return (item for item in items if isinstance(item, Transfer))


class TransfersFromActivity:
    """`transfers` and `pending_transfers` of a backend that implements `activity` and
    `pending_activity`: the same pass, looking for no spends."""

    def transfers(self, watched: Collection[str], start: int, end: int) -> Iterator[Transfer]:
        return transfers_only(self.activity(watched, NO_SPENDS, start, end))

    def pending_transfers(self, watched: Collection[str], now: datetime) -> Iterator[Transfer]:
        return transfers_only(self.pending_activity(watched, NO_SPENDS, now))


def fee_from_values(tx: UtxoTx, input_values: Mapping[Outpoint, int]) -> int | None:
    """Inputs minus outputs, when every input's value is known."""
    if not tx.inputs or any(op not in input_values for op in tx.inputs):
        return None
    return sum(input_values[op] for op in tx.inputs) - sum(amount for _, _, amount, _ in tx.outputs)


def tx_transfers(
    network_code: str,
    tx: UtxoTx,
    scripts: Mapping[str, str],
    *,
    block: BlockRef | None = None,
    position: int | None = None,
    seen_at: datetime | None = None,
) -> Iterator[Transfer]:
    """The transfers of one transaction to watched scripts (a transaction attached by hand)."""
    return transfers_only(
        tx_activity(
            network_code, tx, scripts, None, fee_from_values, block=block, position=position, seen_at=seen_at
        )
    )

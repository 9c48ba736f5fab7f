"""Network scanners: turn a chain backend's view into observations, with a cursor that commits with them.

One scanner per network at a time (a PostgreSQL advisory lock held for the batch's transaction). Each
batch, in one transaction: find the fork point if the chain changed under the stored block hashes and
mark what the dropped blocks held non-canonical; record the transfers into, and the outflows out of, the
gateway's addresses in the next range; move the cursor; store the new tip (which re-settles the payments waiting on confirmations there). A crash
loses nothing: the batch commits whole or not at all, and recording a transfer twice changes nothing.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F

from . import services
from .chains.base import ChainBackend, ChainNodeError, Spend, Transfer
from .chains.redaction import redact_text, redact_url
from .models import (
    ChainObservation,
    ChainTip,
    Network,
    OutflowTransaction,
    ScanCursor,
    ScannedBlock,
    ScanStatus,
)
from .scan_watch import refund_destinations, spend_watch, watched_addresses

logger = logging.getLogger(__name__)

SCAN_LOCK_NAMESPACE = 0x5343  # "SC": the advisory lock key is (namespace, network id)
KEEP_SCANNED_BLOCKS = 500


class ChainMovedError(ChainNodeError):
    """The chain reorganised while a scan read a batch of blocks: the batch is rolled back, not recorded."""


@dataclass(frozen=True)
class ScanReport:
    network_code: str
    locked_out: bool = False
    start: int | None = None
    end: int | None = None
    tip: int | None = None
    transfers: int = 0
    outflows: int = 0
    reorg_fork: int | None = None
    error: str = ""  # why the batch failed (redacted: no node credentials); empty when it did not

    @property
    def lag(self) -> int | None:
        return None if self.tip is None or self.end is None else self.tip - self.end


def _record(item: Transfer | Spend, *, now: datetime, outflow_txs: set[int]) -> bool:
    """Record what a scan found; True for a transfer in, False for an outflow (whose transaction joins
    `outflow_txs`, to derive its settlement once the batch has all of its outflows)."""
    if isinstance(item, Spend):
        outflow = services.outflow_record(spend=item, now=now)
        if outflow is not None:
            outflow_txs.add(outflow.transaction_id)
        return False
    services.observation_record(transfer=item, now=now)
    return True


def backend_for(network: Network) -> ChainBackend:
    """The backend that watches `network`, from its configuration (the admin's Network.rpc_url)."""
    if not network.rpc_url:
        raise ValueError(f"network {network.code} has no rpc_url: nothing to scan")
    if network.chain == "evm":
        from .chains.evm import EvmBackend

        return EvmBackend(network.code, network.rpc_url)
    if network.chain in ("bitcoin", "litecoin"):
        if network.rpc_url.startswith(("esplora+http://", "esplora+https://")):
            from .chains.esplora import EsploraBackend

            return EsploraBackend(
                network.code, network.rpc_url.removeprefix("esplora+"), hrp=network.bech32_hrp
            )
        from .chains.bitcoin_rpc import BitcoinCoreBackend

        # rpc_url carries the node's credentials: http://user:pass@host:port
        return BitcoinCoreBackend(network.code, network.rpc_url, hrp=network.bech32_hrp)
    raise NotImplementedError(f"no scanner for {network.chain} networks")


def networks_to_scan() -> list[str]:
    """Codes of the networks the beat scans: enabled, with a node configured."""
    return list(Network.objects.filter(enabled=True).exclude(rpc_url="").values_list("code", flat=True))


def network_scan_once(*, network_code: str, now: datetime) -> ScanReport:
    """One batch of one network, as its own Celery task runs it each beat tick. A failure (node down,
    bad answer, bad rpc_url) is logged with the network, counted on its `ScanStatus` and returned in the
    report, with the node's credentials redacted everywhere; it is not raised, so it stops nothing else and
    the task's own failure log (which would print the unredacted exception) never sees it."""
    network = Network.objects.filter(code=network_code, enabled=True).exclude(rpc_url="").first()
    if network is None:
        return ScanReport(network_code)  # disabled or unconfigured since the tick
    try:
        report = network_scan(backend=backend_for(network), now=now)
    except NotImplementedError:
        return ScanReport(network_code)
    except Exception as exc:  # counted, stored and logged (redacted) below: reported, not hidden
        return _scan_failure_record(network=network, exc=exc, now=now)
    if not report.locked_out:
        _scan_success_record(network=network, report=report, now=now)
    return report


def _scan_success_record(*, network: Network, report: ScanReport, now: datetime) -> None:
    """A batch that succeeded: the errors in a row end, its time and lag are what readiness and metrics
    read."""
    updated = ScanStatus.objects.filter(network=network).update(
        errors_in_a_row=0, last_success_at=now, lag_blocks=report.lag
    )
    if not updated:
        ScanStatus.objects.get_or_create(
            network=network, defaults={"last_success_at": now, "lag_blocks": report.lag}
        )


def _scan_failure_record(*, network: Network, exc: Exception, now: datetime) -> ScanReport:
    text = str(exc) if isinstance(exc, ChainNodeError) else f"{type(exc).__name__}: {exc}"
    message = redact_text(text, url=network.rpc_url)
    status, _ = ScanStatus.objects.get_or_create(network=network)
    ScanStatus.objects.filter(pk=status.pk).update(
        errors_total=F("errors_total") + 1,
        errors_in_a_row=F("errors_in_a_row") + 1,
        last_error=message[:2000],
        last_error_at=now,
    )
    status.refresh_from_db()
    # A node that cannot be reached is an operator's matter: its message says it all. Anything else is a
    # bug or a surprise: keep its traceback, redacted like the message.
    trace = "" if isinstance(exc, ChainNodeError) else "\n" + "".join(traceback.format_exception(exc))
    logger.error(
        "scan %s (node %s) failed, %s in a row, %s in all: %s%s",
        network.code,
        redact_url(network.rpc_url),
        status.errors_in_a_row,
        status.errors_total,
        message,
        redact_text(trace, url=network.rpc_url),
    )
    return ScanReport(network.code, error=message)


def network_scan(*, backend: ChainBackend, now: datetime, max_blocks: int = 500) -> ScanReport:
    """Scan the next batch of blocks of one network (see the module docstring)."""
    network = Network.objects.get(code=backend.network_code)
    if not ScanCursor.objects.filter(network=network).exists():
        # The first scan places the cursor in a transaction of its own: a first batch that failed took
        # it with it, and a network without a start height then started again from a newer tip, the
        # blocks between never read.
        with transaction.atomic():
            if not _scan_lock(network):
                return ScanReport(network.code, locked_out=True)  # another scanner is placing it
            _cursor_place(network=network, backend=backend)
    with transaction.atomic():
        if not _scan_lock(network):
            return ScanReport(network.code, locked_out=True)
        tip = backend.tip()
        # The tip first, so that what this batch records is settled with today's confirmations.
        ChainTip.objects.update_or_create(
            network=network, defaults={"height": tip.height, "block_hash": tip.hash}
        )
        scan_cursor = _cursor_place(network=network, backend=backend)
        fork = _fork_point(network=network, backend=backend, cursor=scan_cursor)
        if fork is not None:
            _rewind(network=network, fork=fork, now=now)
            scan_cursor.height, scan_cursor.block_hash = fork.height, fork.hash
        start = scan_cursor.height + 1
        end = min(tip.height, scan_cursor.height + max_blocks)
        count = outflows = 0
        outflow_txs: set[int] = set()
        payments_to = watched_addresses(network=network, now=now)
        watched = payments_to + [
            a for a in refund_destinations(network=network, now=now) if a not in payments_to
        ]
        if end >= start:
            spends = spend_watch(network=network, watched=payments_to)
            # After reading, the chain must still have every block the batch rests on, each hash as it was
            # read: its last block (read before the activity: a reorg in between would leave the old
            # chain's transfers recorded under the new chain's hash, where no later scan finds a fork),
            # every block its activity names (all hashes named at a height: a log from a replaced block
            # beside a transaction of the chain's block there), and the block it follows (a reorg after
            # the fork check that replaced it would leave what it held recorded, the cursor past the fork).
            end_ref = backend.block_ref(end)
            read: dict[int, set[str]] = {
                end: {end_ref.hash.lower()},
                scan_cursor.height: {scan_cursor.block_hash.lower()},
            }
            for item in backend.activity(watched, spends, start, end):
                height, block_hash = getattr(item, "block_height", None), getattr(item, "block_hash", "")
                if height is not None and block_hash:
                    read.setdefault(height, set()).add(block_hash.lower())
                if _record(item, now=now, outflow_txs=outflow_txs):
                    count += 1
                else:
                    outflows += 1
            for height, hashes in sorted(read.items()):
                chain_hash = backend.block_ref(height).hash.lower()
                if hashes != {chain_hash}:
                    raise ChainMovedError(
                        f"{network.code}: the chain changed while blocks {start}-{end} were read (a reorg, or a "
                        f"node behind the others): at height {height} it has {chain_hash}, the batch read "
                        f"{', '.join(sorted(hashes - {chain_hash}))}; nothing of them is recorded, the next "
                        "scan reads them again"
                    )
            scan_cursor.height, scan_cursor.block_hash = end_ref.height, end_ref.hash
            ScannedBlock.objects.update_or_create(
                network=network, height=end_ref.height, defaults={"block_hash": end_ref.hash}
            )
            ScannedBlock.objects.filter(
                network=network, height__lt=end_ref.height - KEEP_SCANNED_BLOCKS
            ).delete()
        scan_cursor.save()
        for item in backend.pending_activity(watched, spend_watch(network=network, watched=payments_to), now):
            if _record(item, now=now, outflow_txs=outflow_txs):
                count += 1
            else:
                outflows += 1
        services.settlements_derive(transaction_ids=outflow_txs, now=now)
        if scan_cursor.height >= tip.height:
            _forget_dropped(network=network, backend=backend, now=now)
        services.chain_tip_record(network_code=network.code, height=tip.height, block_hash=tip.hash, now=now)
    report = ScanReport(
        network.code,
        start=start,
        end=scan_cursor.height,
        tip=tip.height,
        transfers=count,
        outflows=outflows,
        reorg_fork=fork.height if fork else None,
    )
    logger.info(
        "scan %s: blocks %s..%s, tip %s, lag %s, %s transfers, %s outflows%s",
        network.code,
        start,
        report.end,
        tip.height,
        report.lag,
        count,
        outflows,
        f", reorg back to {report.reorg_fork}" if fork else "",
    )
    return report


def _scan_lock(network: Network) -> bool:
    """The network's scan lock for this transaction, if no other scanner holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [SCAN_LOCK_NAMESPACE, network.pk])
        (locked,) = cursor.fetchone()
    return locked


def _cursor_place(*, network: Network, backend: ChainBackend) -> ScanCursor:
    """The network's cursor; placed, if it has none, before its start height (else before today's tip)."""
    scan_cursor = ScanCursor.objects.filter(network=network).first()
    if scan_cursor is None:
        first = network.scan_start_height
        start_ref = backend.block_ref(max((backend.tip().height if first is None else first) - 1, 0))
        scan_cursor = ScanCursor.objects.create(
            network=network, height=start_ref.height, block_hash=start_ref.hash
        )
        ScannedBlock.objects.create(network=network, height=start_ref.height, block_hash=start_ref.hash)
    return scan_cursor


@dataclass(frozen=True)
class _Fork:
    height: int
    hash: str


def _fork_point(*, network: Network, backend: ChainBackend, cursor: ScanCursor) -> _Fork | None:
    """None if the chain still has the cursor's block; otherwise the highest stored block it still has."""
    if cursor.height <= backend.tip().height and backend.block_ref(cursor.height).hash == cursor.block_hash:
        return None
    for stored in ScannedBlock.objects.filter(network=network, height__lt=cursor.height).order_by("-height"):
        if (
            stored.height <= backend.tip().height
            and backend.block_ref(stored.height).hash == stored.block_hash
        ):
            return _Fork(stored.height, stored.block_hash)
    lowest = ScannedBlock.objects.filter(network=network).order_by("height").first()
    height = max((lowest.height if lowest else cursor.height) - 1, 0)
    return _Fork(height, backend.block_ref(height).hash)


def _forget_dropped(*, network: Network, backend: ChainBackend, now: datetime) -> None:
    """Unconfirmed observations whose transaction left the mempool without being mined (dropped, or
    replaced by RBF or a double spend) stop counting; their payments are re-settled."""
    unconfirmed = dict(
        ChainObservation.objects.filter(
            network=network, canonical=True, block_height__isnull=True
        ).values_list("pk", "tx_hash")
    )
    unconfirmed_outflows = dict(
        OutflowTransaction.objects.filter(
            network=network, canonical=True, block_height__isnull=True
        ).values_list("pk", "tx_hash")
    )
    if not unconfirmed and not unconfirmed_outflows:
        return
    live = backend.live_transactions(set(unconfirmed.values()) | set(unconfirmed_outflows.values()))
    gone = [pk for pk, tx_hash in unconfirmed_outflows.items() if tx_hash not in live]
    if gone:  # before the observations, as in `_rewind`
        logger.warning("%s: %s unconfirmed outflows dropped or replaced", network.code, len(gone))
        services.outflow_transactions_set_canonical(transaction_ids=gone, canonical=False, now=now)
    gone = [pk for pk, tx_hash in unconfirmed.items() if tx_hash not in live]
    if gone:
        logger.warning("%s: %s unconfirmed observations dropped or replaced", network.code, len(gone))
        services.observations_set_canonical(observation_ids=gone, canonical=False, now=now)


def _rewind(*, network: Network, fork: _Fork, now: datetime) -> None:
    """Observations in blocks above the fork point are no longer evidence until a rescan finds them
    again; their payments are re-settled (and may move back, with an event)."""
    dropped = list(
        ChainObservation.objects.filter(
            network=network, canonical=True, block_height__gt=fork.height
        ).values_list("pk", flat=True)
    )
    dropped_outflows = list(
        OutflowTransaction.objects.filter(
            network=network, canonical=True, block_height__gt=fork.height
        ).values_list("pk", flat=True)
    )
    ScannedBlock.objects.filter(network=network, height__gt=fork.height).delete()
    logger.warning(
        "reorg on %s: back to %s, %s observations and %s outflow transactions dropped",
        network.code,
        fork.height,
        len(dropped),
        len(dropped_outflows),
    )
    # The outflows first: a refund paid by one of them loses its link next, and the settlement it re-derives
    # is then already non-canonical (not an unexpected outflow for a moment).
    if dropped_outflows:
        services.outflow_transactions_set_canonical(
            transaction_ids=dropped_outflows, canonical=False, now=now
        )
    if dropped:
        services.observations_set_canonical(observation_ids=dropped, canonical=False, now=now)

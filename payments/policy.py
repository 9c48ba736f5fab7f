"""The pure evaluation of a payment: evidence in, verdict out.

No ORM, no clock, no I/O. `evaluate()` is a function of its arguments only, so the same evidence in
any order, with any duplication, gives the same verdict, and anyone can re-run it to check a stored
state (`manage.py verify_payments`). The rules are DESIGN.md's; each is named where it is applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# State names (the API); mirrored by models.PaymentState.
CREATED = "created"
AWAITING_PAYMENT = "awaiting_payment"
DETECTED = "detected"
CONFIRMING = "confirming"
PAID = "paid"
UNDERPAID = "underpaid"
OVERPAID = "overpaid"
EXPIRED = "expired"
FAILED = "failed"
REFUNDED = "refunded"

# How each observation is classified.
COUNTED = "counted"
DUPLICATE = "duplicate"
LATE = "late"
AFTER_MONITORING_WINDOW = "after_monitoring_window"
WRONG_ASSET = "wrong_asset"
WRONG_NETWORK = "wrong_network"
NOT_CANONICAL = "not_canonical"
# The native coin sent to a token payment's address by the merchant's own treasury, so that the address
# can pay the gas of its sweep: neither a payment nor a wrong asset.
GAS_FUNDING = "gas_funding"
# Funds that came from the merchant's own payment addresses in the same transaction (a consolidation into
# an address the gateway had given out): the merchant's money moving, not a customer paying.
INTERNAL = "internal_transfer"

# Exceptions that open a review case; each is reported once per observation.
EXCEPTION_KINDS = {
    LATE: "late_payment",
    DUPLICATE: "duplicate_payment",
    WRONG_ASSET: "wrong_asset",
    WRONG_NETWORK: "wrong_network",
    AFTER_MONITORING_WINDOW: "late_payment",
}

ACCEPT_LATE_PAYMENT = "accept_late_payment"
ACCEPT_UNDERPAYMENT = "accept_underpayment"
MARK_PAID = "mark_paid"
REFUND_RECORDED = "refund_recorded"
# Resolutions that move the payment window: `until` is the new deadline (a top-up's) or the cancel time.
EXTEND_DEADLINE = "extend_deadline"
CANCEL = "cancel"

ObservationKey = tuple[str, str, int]  # (network code, tx hash, output or log index)


@dataclass(frozen=True)
class IntentFacts:
    """What was asked. `network` is None while no asset is chosen (state `created`)."""

    amount_due: int | None
    network: str | None
    token_contract: str  # "" for the native coin; lower case
    required_confirmations: int
    expires_at: datetime
    canceled_at: datetime | None = None
    underpayment_tolerance_bps: int = 0
    overpayment_tolerance_bps: int = 0
    late_payment_window: timedelta = timedelta(hours=24)
    # The merchant's treasury addresses on the intent's network (retired ones too: retiring one does not
    # rewrite history); the native coin from one of them to a token payment is gas funding.
    gas_funders: frozenset[str] = frozenset()
    # What confirmed refunds have paid back (base units of the intent's asset): `refunded` once they
    # cover everything received; a partial refund keeps the state.
    refunded: int = 0

    @property
    def deadline(self) -> datetime:
        if self.canceled_at is not None and self.canceled_at < self.expires_at:
            return self.canceled_at
        return self.expires_at


@dataclass(frozen=True)
class ObservationFacts:
    """One output or transfer to the intent's address, as a chain showed it."""

    network: str
    tx_hash: str
    output_index: int
    token_contract: str  # "" for the native coin; lower case
    amount: int
    block_height: int | None = None
    block_hash: str = ""
    position_in_block: int | None = None
    block_time: datetime | None = None
    seen_unconfirmed_at: datetime | None = None
    canonical: bool = True
    sender: str = ""  # EVM: who sent it, lower case; "" where a chain has no single sender
    internal: bool = False  # its transaction also spent from the merchant's own payment addresses

    @property
    def key(self) -> ObservationKey:
        return (self.network, self.tx_hash, self.output_index)

    @property
    def first_seen_at(self) -> datetime:
        """The earlier of mempool sighting and block time: never when a scanner got round to it."""
        times = [t for t in (self.seen_unconfirmed_at, self.block_time) if t is not None]
        if not times:
            raise ValueError(f"observation {self.key} has neither a mempool time nor a block time")
        return min(times)


@dataclass(frozen=True)
class ResolutionFacts:
    id: int
    kind: str
    observation_key: ObservationKey | None = None
    until: datetime | None = None  # EXTEND_DEADLINE: the new deadline; CANCEL: when it was canceled


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str
    amount_due: int
    amount_seen: int
    amount_confirmed: int
    required_confirmations: int
    confirmations: int  # of the least-confirmed counted transaction; 0 when none
    classifications: Mapping[ObservationKey, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    fingerprint: str = ""

    @property
    def exceptions(self) -> list[tuple[str, ObservationKey]]:
        """(exception kind, observation) pairs that open a review case, in a stable order."""
        return sorted(
            (EXCEPTION_KINDS[c], key) for key, c in self.classifications.items() if c in EXCEPTION_KINDS
        )

    def as_dict(self) -> dict:
        return {
            "state": self.state,
            "reason": self.reason,
            "amount_due": str(self.amount_due),
            "amount_seen": str(self.amount_seen),
            "amount_confirmed": str(self.amount_confirmed),
            "required_confirmations": self.required_confirmations,
            "confirmations": self.confirmations,
            "flags": list(self.flags),
            "classifications": {"/".join(map(str, k)): v for k, v in sorted(self.classifications.items())},
        }


@dataclass(frozen=True)
class _Tx:
    """The outputs of one transaction that count for the intent, taken together."""

    tx_hash: str
    amount: int
    block_height: int | None
    position_in_block: int | None
    first_seen_at: datetime
    keys: tuple[ObservationKey, ...]

    def sort_key(self) -> tuple:
        # Confirmed before unconfirmed; by height and position in block; then by first seen.
        in_block = self.block_height is not None
        return (
            0 if in_block else 1,
            self.block_height if in_block else 0,
            self.position_in_block if self.position_in_block is not None else 0,
            self.first_seen_at,
            self.tx_hash,
        )


def confirmations(block_height: int | None, tip_height: int | None) -> int:
    if block_height is None or tip_height is None or tip_height < block_height:
        return 0
    return tip_height - block_height + 1


def evaluate(
    intent: IntentFacts,
    observations: Iterable[ObservationFacts],
    resolutions: Sequence[ResolutionFacts],
    tips: Mapping[str, int],
    now: datetime,
) -> Verdict:
    """The state `intent` must be in given its evidence, and why."""
    deadline = effective_deadline(intent, resolutions)
    window_closed = now >= deadline
    resolution_kinds = {r.kind for r in resolutions}
    accepted_late = {r.observation_key for r in resolutions if r.kind == ACCEPT_LATE_PAYMENT}

    if intent.network is None or intent.amount_due is None:
        state = EXPIRED if window_closed else CREATED
        reason = (
            "no asset was chosen before the deadline" if window_closed else "waiting for the asset choice"
        )
        return _verdict(intent, state, reason, resolutions, 0, 0, 0, {}, ())

    # Duplicated evidence is the same evidence: one row per key, chosen independently of input order.
    unique: dict[ObservationKey, ObservationFacts] = {}
    for o in sorted(observations, key=_observation_order):
        unique.setdefault(o.key, o)

    classifications: dict[ObservationKey, str] = {}
    candidates: list[ObservationFacts] = []
    for key, o in unique.items():
        if not o.canonical:
            classifications[key] = NOT_CANONICAL
        elif o.internal:
            classifications[key] = INTERNAL
        elif o.network != intent.network:
            classifications[key] = WRONG_NETWORK
        elif o.token_contract != intent.token_contract:
            funding = o.token_contract == "" and o.sender != "" and o.sender in intent.gas_funders
            classifications[key] = GAS_FUNDING if funding else WRONG_ASSET
        elif o.first_seen_at < deadline or key in accepted_late:
            candidates.append(o)
        elif o.first_seen_at < deadline + intent.late_payment_window:
            classifications[key] = LATE  # never moves the state by itself; opens a review case
        else:
            classifications[key] = AFTER_MONITORING_WINDOW

    # Group the counted outputs by transaction; the transaction is the unit of ordering and duplicates.
    by_tx: dict[str, list[ObservationFacts]] = {}
    for o in candidates:
        by_tx.setdefault(o.tx_hash, []).append(o)
    txs = sorted((_tx_of(outputs) for outputs in by_tx.values()), key=_Tx.sort_key)

    amount_due = intent.amount_due
    tolerance = amount_due * intent.underpayment_tolerance_bps // 10_000
    threshold = max(1, amount_due - tolerance)
    tip = tips.get(intent.network)

    running = 0
    counted: list[_Tx] = []
    for tx in txs:
        if running >= threshold:
            # The payment was complete before this transaction: every later whole one is a duplicate.
            for key in tx.keys:
                classifications[key] = DUPLICATE
            continue
        counted.append(tx)
        running += tx.amount
        for key in tx.keys:
            classifications[key] = COUNTED

    required = intent.required_confirmations
    tx_confirmations = [confirmations(tx.block_height, tip) for tx in counted]
    amount_seen = sum(tx.amount for tx in counted)
    amount_confirmed = sum(
        tx.amount for tx, c in zip(counted, tx_confirmations, strict=True) if c >= required
    )
    least_confirmations = min(tx_confirmations, default=0)
    complete = amount_seen >= threshold
    pending = amount_confirmed < amount_seen

    received = sum(
        o.amount
        for o in unique.values()
        if o.canonical
        and not o.internal
        and o.network == intent.network
        and o.token_contract == intent.token_contract
    )
    if intent.refunded > 0 and intent.refunded >= received:
        state, reason = REFUNDED, "confirmed refunds paid back everything received"
    elif REFUND_RECORDED in resolution_kinds:
        state, reason = REFUNDED, "a refund was recorded"
    elif MARK_PAID in resolution_kinds:
        state, reason = PAID, "marked paid by an authorised person"
    elif not counted:
        wrong = any(c in (WRONG_ASSET, WRONG_NETWORK) for c in classifications.values())
        if window_closed and wrong:
            state, reason = FAILED, "only funds of the wrong asset or network arrived before the deadline"
        elif window_closed:
            state, reason = EXPIRED, "no valid funds arrived before the deadline"
        else:
            state, reason = AWAITING_PAYMENT, "no valid funds seen yet"
    elif pending:
        if complete and all(tx.block_height is not None for tx in counted):
            state, reason = CONFIRMING, f"in a block; {least_confirmations} of {required} confirmations"
        else:
            state, reason = DETECTED, "funds seen, not yet confirmed"
    elif not complete:
        if ACCEPT_UNDERPAYMENT in resolution_kinds:
            state, reason = PAID, "underpayment accepted by an authorised person"
        else:
            state, reason = UNDERPAID, f"confirmed {amount_confirmed} of {threshold} needed"
    elif amount_confirmed > amount_due + amount_due * intent.overpayment_tolerance_bps // 10_000:
        state, reason = OVERPAID, f"confirmed {amount_confirmed}, {amount_confirmed - amount_due} over"
    else:
        state, reason = PAID, "confirmed funds meet the amount due"

    flags = tuple(sorted({EXCEPTION_KINDS[c] for c in classifications.values() if c in EXCEPTION_KINDS}))
    fingerprint_parts = [
        (tx.tx_hash, tx.amount, tx.block_height, c >= required)
        for tx, c in zip(counted, tx_confirmations, strict=True)
    ]
    return _verdict(
        intent,
        state,
        reason,
        resolutions,
        amount_seen,
        amount_confirmed,
        least_confirmations,
        classifications,
        flags,
        fingerprint_parts,
        block_hashes=sorted((o.tx_hash, o.block_hash) for o in candidates),
    )


def effective_deadline(intent: IntentFacts, resolutions: Sequence[ResolutionFacts]) -> datetime:
    """The end of the payment window: the intent's own (expiry, or the merchant's cancel), moved later by
    the latest top-up extension and earlier by a cancel from the back office. A cancel wins over an
    extension: funds first seen after it are late whatever was extended."""
    deadline = intent.deadline
    extensions = [r.until for r in resolutions if r.kind == EXTEND_DEADLINE and r.until is not None]
    if extensions:
        deadline = max(deadline, *extensions)
    cancels = [r.until for r in resolutions if r.kind == CANCEL and r.until is not None]
    if cancels:
        deadline = min(deadline, *cancels)
    return deadline


def _verdict(
    intent: IntentFacts,
    state: str,
    reason: str,
    resolutions: Sequence[ResolutionFacts],
    amount_seen: int,
    amount_confirmed: int,
    least_confirmations: int,
    classifications: dict[ObservationKey, str],
    flags: tuple[str, ...],
    counted: Sequence[tuple] = (),
    block_hashes: Sequence[tuple[str, str]] = (),
) -> Verdict:
    evidence = {
        "state": state,
        "counted": [list(map(str, c)) for c in counted],
        "blocks": [list(b) for b in block_hashes],
        "resolutions": sorted(r.id for r in resolutions),
        "refunded": intent.refunded,
        "classifications": sorted("/".join(map(str, k)) + "=" + v for k, v in classifications.items()),
    }
    fingerprint = hashlib.sha256(json.dumps(evidence, sort_keys=True).encode()).hexdigest()
    return Verdict(
        state=state,
        reason=reason,
        amount_due=intent.amount_due or 0,
        amount_seen=amount_seen,
        amount_confirmed=amount_confirmed,
        required_confirmations=intent.required_confirmations,
        confirmations=least_confirmations,
        classifications=dict(sorted(classifications.items())),
        flags=flags,
        fingerprint=fingerprint,
    )


def _observation_order(o: ObservationFacts) -> tuple:
    # A total order over every field, so that which copy of a duplicated key survives never depends
    # on the order the evidence arrived in.
    return (o.key, repr(o))


def _tx_of(outputs: list[ObservationFacts]) -> _Tx:
    first = outputs[0]
    return _Tx(
        tx_hash=first.tx_hash,
        amount=sum(o.amount for o in outputs),
        block_height=first.block_height,
        position_in_block=first.position_in_block,
        first_seen_at=min(o.first_seen_at for o in outputs),
        keys=tuple(sorted(o.key for o in outputs)),
    )


def required_confirmations_for(amount_due: int, rules: Iterable[tuple[int, int]], default: int) -> int:
    """The confirmations of the tier with the highest minimum amount not above `amount_due`.
    `rules` are (min_amount_base_units, confirmations) pairs; `default` applies below every tier."""
    best: tuple[int, int] | None = None
    for min_amount, confs in rules:
        if min_amount <= amount_due and (best is None or min_amount > best[0]):
            best = (min_amount, confs)
    return best[1] if best is not None else default

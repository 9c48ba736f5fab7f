"""The state a refund must be in, from its evidence alone (pure: no database, no clock of its own), like
`policy.evaluate` for payments.

    requested -> approved -> awaiting_payment -> detected -> confirmed      (refund.succeeded)
              \\-> canceled (before any payment is seen)     \\-> failed (its window closed unpaid)

A transfer counts only if it pays the destination exactly the refund's amount in the refund's asset and
network (from any address); one of another amount is not accepted (it is reported, and if nothing else
pays the refund before its window closes, the refund fails saying so). A confirmed refund whose
transaction is reorged away goes back, as a payment does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .policy import ObservationFacts, confirmations

REQUESTED = "requested"
APPROVED = "approved"
AWAITING_PAYMENT = "awaiting_payment"
DETECTED = "detected"
CONFIRMED = "confirmed"
CANCELED = "canceled"
FAILED = "failed"


def events_for(before: str, after: str) -> list[str]:
    """The events a change of state announces, in order. The approval is announced once, whatever state
    it leads to (approved, or awaiting_payment when the destination was known); a refund confirmed in the
    first block it was seen in is announced detected, then succeeded; awaiting_payment itself has no event
    (the destination is in the snapshot of the next one)."""
    if before == after:
        return []
    if before in (DETECTED, CONFIRMED) and after in (APPROVED, AWAITING_PAYMENT):
        return ["refund.reverted"]  # its transaction was reorged away or dropped: not paid after all
    events = []
    if before == REQUESTED and after != CANCELED:
        events.append("refund.approved")
    if after == CONFIRMED and before != DETECTED:
        events.append("refund.detected")
    events += {
        DETECTED: ["refund.detected"],
        CONFIRMED: ["refund.succeeded"],
        CANCELED: ["refund.canceled"],
        FAILED: ["refund.failed"],
    }.get(after, [])
    return events


@dataclass(frozen=True)
class RefundFacts:
    amount: int
    network: str
    token_contract: str  # "" for the native coin; lower case
    required_confirmations: int
    expires_at: datetime
    approved: bool
    destination: str
    canceled_at: datetime | None = None


@dataclass(frozen=True)
class RefundVerdict:
    state: str
    reason: str
    observation: ObservationFacts | None = None  # the transfer that pays it
    confirmations: int = 0
    wrong_amount_seen: bool = False


def pays(refund: RefundFacts, o: ObservationFacts) -> bool:
    return (
        o.canonical
        and o.network == refund.network
        and o.token_contract == refund.token_contract
        and o.amount == refund.amount
    )


def evaluate_refund(
    refund: RefundFacts, transfers: list[ObservationFacts], tip: int | None, now: datetime
) -> RefundVerdict:
    """`transfers`: what the chain showed to the destination since the refund was made (any amount;
    those another refund already claims excluded by the caller)."""
    # Only what was first seen before the refund's window closed (and before a cancel) pays it: a refund
    # that failed or was canceled stays so, and a later transfer is left for the refund that replaced it.
    closes = min(t for t in (refund.expires_at, refund.canceled_at) if t is not None)
    in_time = [o for o in transfers if o.first_seen_at < closes]
    paying = sorted(
        (o for o in in_time if pays(refund, o)),
        key=lambda o: (o.block_height is None, o.block_height or 0, o.position_in_block or 0, o.key),
    )
    wrong = any(o.canonical and o.network == refund.network and not pays(refund, o) for o in in_time)
    if refund.canceled_at is not None and not paying:
        return RefundVerdict(CANCELED, "canceled before it was paid", wrong_amount_seen=wrong)
    if not refund.approved:
        return RefundVerdict(REQUESTED, "waiting for approval")
    if paying:
        best = paying[0]
        seen = confirmations(best.block_height, tip)
        if seen >= refund.required_confirmations and best.block_height is not None:
            return RefundVerdict(CONFIRMED, "paid to the destination and confirmed", best, seen, wrong)
        return RefundVerdict(DETECTED, "paid to the destination, confirming", best, seen, wrong)
    if now >= refund.expires_at:
        if wrong:
            reason = "not paid in time: only a transfer of another amount or asset reached the destination"
        elif not refund.destination:
            reason = "no destination was given in time"
        else:
            reason = "not paid in time"
        return RefundVerdict(FAILED, reason, wrong_amount_seen=wrong)
    if not refund.destination:
        return RefundVerdict(APPROVED, "waiting for the destination")
    return RefundVerdict(AWAITING_PAYMENT, "waiting for the merchant's payment", wrong_amount_seen=wrong)

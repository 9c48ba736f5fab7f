"""Resolutions: decisions by authorised people, recorded as evidence that `evaluate()` reads. Each is checked
against a fresh verdict under the intent's lock (a decision about a payment must fit the payment as it is
now, not as the person saw it), written, and the payment settled, all in one transaction: the state
changes only as the evaluation of the new evidence says. Who may decide (roles, merchants, four-eyes) is
the back office's business (`support`); this module knows only what the decision is and why."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction

from .. import policy
from ..errors import Conflict, InvalidRequest, NotFound
from ..models import ChainObservation, PaymentIntent, Resolution
from ..selectors import INTENT_RELATED, intent_evidence, transactions_representation
from .events import events_write
from .evidence import payment_settle

# A reason is at least a sentence: someone reading the audit log later must learn why.
REASON_MIN_CHARACTERS = 20
REASON_MIN_WORDS = 4
REASON_MAX_CHARACTERS = 4000  # a reason is read by people, in the audit log and on the payment page
# How far a top-up deadline may be moved: beyond this a new payment is the better answer.
MAX_EXTENSION = timedelta(days=30)

DECIDABLE = (
    Resolution.Kind.ACCEPT_LATE_PAYMENT,
    Resolution.Kind.ACCEPT_UNDERPAYMENT,
    Resolution.Kind.MARK_PAID,
    Resolution.Kind.CANCEL,
    Resolution.Kind.EXTEND_DEADLINE,
)
PAID_STATES = (policy.PAID, policy.OVERPAID, policy.REFUNDED)


def reason_check(reason: str | None) -> str:
    """The reason, stripped; refused unless it is at least a sentence."""
    reason = (reason or "").strip()
    if len(reason) < REASON_MIN_CHARACTERS or len(reason.split()) < REASON_MIN_WORDS:
        raise InvalidRequest(
            f"give a reason of at least a sentence ({REASON_MIN_WORDS} words, "
            f"{REASON_MIN_CHARACTERS} characters): it is kept with the decision",
            code="reason_required",
            param="reason",
        )
    if len(reason) > REASON_MAX_CHARACTERS:
        raise InvalidRequest(
            f"a reason has at most {REASON_MAX_CHARACTERS} characters", code="reason_too_long", param="reason"
        )
    return reason


def resolution_check(
    *,
    intent: PaymentIntent,
    kind: str,
    now: datetime,
    observation_id: int | None = None,
    until: datetime | None = None,
) -> policy.Verdict:
    """Whether the decision fits the payment now (its fresh verdict, returned); raises Conflict saying why
    not. Used before a decision is proposed for approval and again, under the lock, when it is applied."""
    facts, observations, resolutions, tips = intent_evidence(intent)
    verdict = policy.evaluate(facts, observations, resolutions, tips, now)
    state = verdict.state

    def refuse(message: str, code: str = "resolution_not_applicable"):
        raise Conflict(message, code=code)

    if kind not in DECIDABLE:
        raise InvalidRequest(f"no decision {kind!r}", code="invalid_resolution", param="kind")
    if kind == Resolution.Kind.ACCEPT_LATE_PAYMENT:
        key = _observation_key(intent, observation_id)
        if verdict.classifications.get(key) not in (policy.LATE, policy.AFTER_MONITORING_WINDOW):
            refuse(f"transaction output {'/'.join(map(str, key))} is not a late payment to this intent")
    elif kind == Resolution.Kind.ACCEPT_UNDERPAYMENT:
        if state != policy.UNDERPAID:
            refuse(f"the payment is {state}, not underpaid")
    elif kind == Resolution.Kind.MARK_PAID:
        if intent.network_asset_id is None:
            refuse("no asset was chosen: there is no amount to mark paid")
        if state in PAID_STATES:
            refuse(f"the payment is {state} already")
    elif kind == Resolution.Kind.CANCEL:
        if state not in (policy.CREATED, policy.AWAITING_PAYMENT) or verdict.amount_seen:
            refuse(f"the payment is {state}: only a payment with no funds seen can be canceled")
    elif kind == Resolution.Kind.EXTEND_DEADLINE:
        if state != policy.UNDERPAID:
            refuse(f"the payment is {state}: a top-up is asked for an underpaid payment")
        if until is None:
            raise InvalidRequest("give the new deadline", code="parameter_missing", param="until")
        current = policy.effective_deadline(facts, resolutions)
        if until <= max(now, current):
            raise InvalidRequest(
                "the new deadline must be later than now and than the current deadline "
                f"({current.isoformat()})",
                code="deadline_not_later",
                param="until",
            )
        if until > now + MAX_EXTENSION:
            raise InvalidRequest(
                f"a top-up deadline is at most {MAX_EXTENSION.days} days away",
                code="deadline_too_far",
                param="until",
            )
    return verdict


def resolution_record(
    *,
    intent_id: str,
    kind: str,
    actor,
    role: str,
    reason: str,
    now: datetime,
    observation_id: int | None = None,
    until: datetime | None = None,
) -> list[Resolution]:
    """Record the decision and settle the payment, in the caller's transaction if there is one (an
    approval applies it together with its own rows). Accepting a late payment accepts every late output
    of that transaction to the intent. Extending the deadline tells the merchant (event
    `payment.top_up_requested`, whose snapshot carries the remaining amount and its payment URI)."""
    reason = reason_check(reason)
    with transaction.atomic():  # a savepoint: a refused decision leaves the caller's transaction usable
        intent = (
            PaymentIntent.objects.select_for_update(of=("self",))
            .select_related(*INTENT_RELATED)
            .filter(pk=intent_id)
            .first()
        )
        if intent is None:
            raise NotFound(f"no payment intent {intent_id}", code="intent_not_found")
        verdict = resolution_check(
            intent=intent, kind=kind, now=now, observation_id=observation_id, until=until
        )
        common = {"intent": intent, "kind": kind, "actor": actor, "role": role, "reason": reason}
        if kind == Resolution.Kind.ACCEPT_LATE_PAYMENT:
            tx = ChainObservation.objects.get(pk=observation_id)
            late = [
                o
                for o in ChainObservation.objects.filter(
                    intent=intent, network=tx.network, tx_hash=tx.tx_hash
                )
                if verdict.classifications.get((tx.network.code, o.tx_hash, o.output_index))
                in (policy.LATE, policy.AFTER_MONITORING_WINDOW)
            ]
            made = [Resolution.objects.create(observation=o, **common) for o in late]
        elif kind == Resolution.Kind.CANCEL:
            made = [Resolution.objects.create(until=now, **common)]
        else:
            made = [Resolution.objects.create(until=until, **common)]
        payment_settle(intent_id=intent.pk, now=now, locked=intent)
        if kind == Resolution.Kind.EXTEND_DEADLINE:
            _, observations, _, tips = intent_evidence(intent)
            events_write(
                intent=intent,
                events=[("payment.top_up_requested", f"resolution:{made[0].pk}", None)],
                transactions=transactions_representation(intent, observations, tips),
            )
    return made


def _observation_key(intent: PaymentIntent, observation_id: int | None) -> policy.ObservationKey:
    if observation_id is None:
        raise InvalidRequest("name the late transaction", code="parameter_missing", param="observation")
    found = (
        ChainObservation.objects.filter(pk=observation_id, intent=intent)
        .values_list("network__code", "tx_hash", "output_index")
        .first()
    )
    if found is None:
        raise NotFound("no such transaction output paid this intent", code="observation_not_found")
    return found

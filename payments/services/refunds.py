"""Refunds: requested by the merchant (API) or by support (a dangerous action), paid by the merchant from
its own wallet, verified on chain. The state is derived from evidence by `refund_policy.evaluate_refund`
and stored by `refund_settle`, under the payment's row lock (payment first, then refund, everywhere), so
the total refunded is checked against what was received without a race, and a refund that becomes (or
stops being) confirmed re-settles its payment (`refunded` once confirmed refunds cover what was received).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from .. import refund_policy
from ..errors import Conflict
from ..models import ChainObservation, ChainTip, OutflowTransaction, PaymentIntent, Refund
from ..selectors import INTENT_RELATED, intents_transactions, observation_facts, refunded_amount
from ..selectors_refunds import refund_representation
from .events import events_write
from .refund_checks import Fixed, destination_normalize, reason_clean, refund_check
from .settlements import settlements_derive

State = Refund.State
AmountKind = Refund.AmountKind


def refund_days() -> int:
    return settings.GATEWAY_REFUND_DAYS


def _locked_intent(intent_id: str) -> PaymentIntent:
    return (
        PaymentIntent.objects.select_for_update(of=("self",))
        .select_related(*INTENT_RELATED)
        .get(pk=intent_id)
    )


def _locked(refund_id: str) -> tuple[PaymentIntent, Refund]:
    """The refund's payment, then the refund, locked in that order (as everywhere: no deadlock)."""
    intent_id = Refund.objects.values_list("intent_id", flat=True).get(pk=refund_id)
    intent = _locked_intent(intent_id)
    return intent, Refund.objects.select_for_update().get(pk=refund_id)


def refund_create(
    *,
    intent_id: str,
    amount_kind: str,
    value: str | None = None,
    currency: str | None = None,
    reason: str,
    requested_by: str,
    approved: bool,
    destination: str = "",
    now: datetime,
    fixed: Fixed | None = None,
) -> Refund:
    """A refund of a payment, checked under the payment's lock: the payment received funds, and this
    refund with every other one not canceled or failed stays within what was received. `approved`: the
    merchant's own request (API) or support's after its approval; otherwise it waits in `requested`.
    `fixed`: the amount (and fiat rate evidence) as `refund_check` found it when support asked."""
    reason = reason_clean(reason)
    with transaction.atomic():
        intent = _locked_intent(intent_id)
        # The same checks as support's, now under the payment's lock: no other refund can slip in between.
        amount, evidence = refund_check(
            intent=intent, amount_kind=amount_kind, value=value, currency=currency, now=now, fixed=fixed
        )
        address = destination_normalize(intent, destination) if destination else ""
        refund = Refund.objects.create(
            merchant_id=intent.merchant_id,
            intent=intent,
            network_asset=intent.network_asset,
            state=State.REQUESTED,
            reason=reason,
            amount_kind=amount_kind,
            amount_base_units=amount,
            requested_by=requested_by[:200],
            approved_by=requested_by[:200] if approved else "",
            approved_at=now if approved else None,
            destination=address,
            destination_set_by=requested_by[:200] if address else "",
            destination_set_at=now if address else None,
            expires_at=now + timedelta(days=refund_days()),
            created_at=now,
            updated_at=now,
            **evidence,
        )
        _events(intent, refund, ["refund.created"])
        refund_settle(refund_id=refund.pk, now=now, locked=intent)
    return Refund.objects.get(pk=refund.pk)


def refund_approve(*, refund_id: str, approved_by: str, now: datetime) -> Refund:
    with transaction.atomic():
        intent, refund = _locked(refund_id)
        if refund.state != State.REQUESTED:
            raise Conflict(
                f"the refund is {refund.state}, not waiting for approval", code="refund_not_requested"
            )
        Refund.objects.filter(pk=refund.pk).update(
            approved_by=approved_by[:200], approved_at=now, updated_at=now
        )
        refund_settle(refund_id=refund.pk, now=now, locked=intent)
    return Refund.objects.get(pk=refund_id)


def refund_destination_set(
    *, refund_id: str, address: str, set_by: str, now: datetime, replace_ok: bool = False
) -> Refund:
    """The address the refund is paid to, checked for the payment's network. The customer (the refund
    page) sets it once; support may replace it (`replace_ok`) until a payment to it is seen."""
    with transaction.atomic():
        intent, refund = _locked(refund_id)
        if refund.state not in (State.REQUESTED, State.APPROVED, State.AWAITING_PAYMENT):
            raise Conflict(
                f"the refund is {refund.state}: its destination cannot change", code="refund_closed"
            )
        if refund.destination and not replace_ok:
            raise Conflict("the refund's destination is set already", code="destination_set")
        normalized = destination_normalize(intent, address)
        Refund.objects.filter(pk=refund.pk).update(
            destination=normalized, destination_set_by=set_by[:200], destination_set_at=now, updated_at=now
        )
        refund_settle(refund_id=refund.pk, now=now, locked=intent)
    return Refund.objects.get(pk=refund_id)


def refund_cancel(*, refund_id: str, canceled_by: str, now: datetime) -> Refund:
    """Cancel a refund no payment has been seen for (once one is seen, it is the chain's to decide)."""
    with transaction.atomic():
        intent, refund = _locked(refund_id)
        if refund.state not in (State.REQUESTED, State.APPROVED, State.AWAITING_PAYMENT):
            raise Conflict(
                f"the refund is {refund.state}: only a refund not yet paid can be canceled",
                code="refund_not_cancelable",
            )
        Refund.objects.filter(pk=refund.pk).update(
            canceled_by=canceled_by[:200], canceled_at=now, updated_at=now
        )
        refund_settle(refund_id=refund.pk, now=now, locked=intent)
    return Refund.objects.get(pk=refund_id)


def refund_evidence(refund: Refund) -> tuple[refund_policy.RefundFacts, list, int | None]:
    na = refund.network_asset
    network = na.network
    intent = refund.intent
    facts = refund_policy.RefundFacts(
        amount=int(refund.amount_base_units),
        network=network.code,
        token_contract=na.contract_address.lower(),
        required_confirmations=intent.required_confirmations or na.default_confirmations or 1,
        expires_at=refund.expires_at,
        approved=refund.approved_at is not None,
        destination=refund.destination,
        canceled_at=refund.canceled_at,
    )
    transfers = []
    if refund.destination:
        claimed = (
            Refund.objects.exclude(pk=refund.pk).filter(observation__isnull=False).values("observation_id")
        )
        rows = (
            ChainObservation.objects.filter(
                network=network,
                address=refund.destination,
                intent__isnull=True,
                token_contract=na.contract_address.lower(),
                amount_base_units=refund.amount_base_units,
            )
            .exclude(pk__in=claimed)
            .order_by("pk")
        )
        for o in rows:
            f = observation_facts(o, network.code)
            if f.first_seen_at >= refund.created_at - timedelta(minutes=5):  # clocks differ a little
                transfers.append(f)
    tip = ChainTip.objects.filter(network=network).values_list("height", flat=True).first()
    return facts, transfers, tip


def refund_difference(refund: Refund, now: datetime) -> str | None:
    """How the stored refund differs from what its evidence says (read-only), for `verify_payments`."""
    facts, transfers, tip = refund_evidence(refund)
    verdict = refund_policy.evaluate_refund(facts, transfers, tip, now)
    if verdict.state == refund.state:
        return None
    if verdict.state == State.FAILED and refund.state in (State.APPROVED, State.AWAITING_PAYMENT):
        return None  # its window closed since the last run of the beat; the next one fails it
    return f"refund {refund.pk}: stored {refund.state}, evidence says {verdict.state} ({verdict.reason})"


def refund_settle(*, refund_id: str, now: datetime, locked: PaymentIntent | None = None) -> Refund:
    """Bring the refund's state in line with its evidence; events for a change; the payment re-settled
    when its confirmed refunds change. Idempotent."""
    from .evidence import payment_settle

    with transaction.atomic():
        intent = locked or _locked_intent(
            Refund.objects.values_list("intent_id", flat=True).get(pk=refund_id)
        )
        refund = (
            Refund.objects.select_for_update()
            .select_related("network_asset__network", "intent")
            .get(pk=refund_id)
        )
        facts, transfers, tip = refund_evidence(refund)
        verdict = refund_policy.evaluate_refund(facts, transfers, tip, now)
        observation_id = None
        if verdict.observation is not None:
            observation_id = (
                ChainObservation.objects.filter(
                    network__code=verdict.observation.network,
                    tx_hash=verdict.observation.tx_hash,
                    output_index=verdict.observation.output_index,
                )
                .values_list("pk", flat=True)
                .first()
            )
        failure = verdict.reason[:200] if verdict.state == State.FAILED else ""
        before, linked_before = refund.state, refund.observation_id
        was_confirmed = before == State.CONFIRMED
        if (refund.state, refund.observation_id, refund.failure_reason) != (
            verdict.state,
            observation_id,
            failure,
        ):
            refund.state, refund.observation_id, refund.failure_reason = (
                verdict.state,
                observation_id,
                failure,
            )
            refund.updated_at = now
            events = refund_policy.events_for(before, verdict.state)
            if events:
                refund.event_revision += 1
            refund.save()
            # The payment's snapshot in the refund's events already shows what has been paid back.
            intent.amount_refunded_base_units = refunded_amount(intent)
            if events:
                _events(intent, refund, events)
        if was_confirmed != (refund.state == State.CONFIRMED):
            payment_settle(intent_id=intent.pk, now=now, locked=intent)
        if linked_before != refund.observation_id:
            _settlements_rederive(
                refund.network_asset.network_id, {linked_before, refund.observation_id}, now
            )
    return refund


def _settlements_rederive(network_id: int, observation_ids: set[int | None], now: datetime) -> None:
    """A settlement names a destination `refund` when a refund's link points at it: when the link moves
    (paid, reorged out, another transfer), the settlements of the transactions it pointed at follow.
    Locks: payment, refund, then the outflow transactions (after, never before, a payment's lock)."""
    hashes = ChainObservation.objects.filter(pk__in=[i for i in observation_ids if i]).values("tx_hash")
    ids = OutflowTransaction.objects.filter(network_id=network_id, tx_hash__in=hashes).values_list(
        "pk", flat=True
    )
    settlements_derive(transaction_ids=list(ids), now=now)


def _events(intent: PaymentIntent, refund: Refund, types: list[str]) -> None:
    details = {"refund": refund_representation(refund)}
    events_write(
        intent=intent,
        events=[(t, f"{t}:{refund.pk}:{refund.event_revision}", None) for t in types],
        transactions=intents_transactions([intent])[intent.pk],
        details=details,
    )


def refunds_settle_at(*, network_id: int, addresses: set[str], now: datetime) -> int:
    """Re-settle the open refunds paid to these addresses (a transfer to one was recorded or changed)."""
    ids = list(
        Refund.objects.filter(
            network_asset__network_id=network_id,
            destination__in=addresses,
            state__in=[State.AWAITING_PAYMENT, State.DETECTED, State.CONFIRMED],
        )
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )
    for refund_id in ids:
        refund_settle(refund_id=refund_id, now=now)
    return len(ids)


def refunds_settle_due(*, now: datetime, network_id: int | None = None, confirming_only: bool = False) -> int:
    """Refunds confirming (a new tip) and, unless `confirming_only`, refunds whose window closed unpaid
    (-> failed), re-settled."""
    due = Q(state=State.DETECTED)
    if not confirming_only:
        due |= Q(state__in=[State.APPROVED, State.AWAITING_PAYMENT], expires_at__lte=now)
    due = Refund.objects.filter(due)
    if network_id is not None:
        due = due.filter(network_asset__network_id=network_id)
    ids = list(due.order_by("created_at", "pk").values_list("pk", flat=True)[:1000])
    for refund_id in ids:
        refund_settle(refund_id=refund_id, now=now)
    return len(ids)

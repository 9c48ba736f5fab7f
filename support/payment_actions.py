"""Safe actions on a payment (support agents): each checks the actor's permission and merchant scope here,
not only in the view, takes a note, and in one transaction does its work, writes an audit entry and, where
the merchant must act, an event the merchant receives. None writes a payment's state: a top-up is a
resolution (evidence), an attached transaction is an observation, both settled by payments' services."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction

from payments import services
from payments.admin_access import staff_merchants
from payments.errors import Conflict, InvalidRequest, NotFound
from payments.models import ChainObservation, Event, PaymentIntent, PaymentState, Refund
from payments.selectors import intent_queryset, intents_deadlines, intents_transactions
from payments.services.attach import refund_transaction_attach, transaction_attach
from payments.webhooks.endpoints import event_redeliver

from .audit import audit_record
from .cases import note_text
from .models import OverpaymentDecision
from .roles import roles_of as actor_roles

ACTION_PERMISSION = "support.change_supportcase"
PAYABLE = (PaymentState.CREATED, PaymentState.AWAITING_PAYMENT, PaymentState.UNDERPAID)


def payment_require(actor: User, intent: PaymentIntent) -> None:
    """A safe action on a payment needs the case-work permission (support agents and leads) and the
    payment's merchant among the actor's."""
    if not (actor.is_active and actor.is_staff and actor.has_perm(ACTION_PERMISSION)):
        raise PermissionDenied("you may not act on payments")
    if not staff_merchants(actor).filter(pk=intent.merchant_id).exists():
        raise PermissionDenied("you may not act on this merchant's payments")


def note_check(note: str | None) -> str:
    """The note, stripped: every action says why (it is the audit entry's reason)."""
    note = (note or "").strip()
    if not note:
        raise InvalidRequest("write a note saying why", code="note_required", param="note")
    return note_text(note, param="note", missing="write a note saying why")


def payment_audit(
    actor: User,
    action: str,
    intent: PaymentIntent,
    before: Any,
    after: Any,
    note: str,
    now: datetime,
    **context,
) -> None:
    audit_record(
        actor=actor.get_username(),
        role=actor_roles(actor),
        action=action,
        now=now,
        merchant_id=intent.merchant_id,
        object_type="payment_intent",
        object_id=intent.pk,
        before=before,
        after=after,
        reason=note,
        **context,
    )


def _locked(intent: PaymentIntent) -> PaymentIntent:
    return intent_queryset().select_for_update(of=("self",)).get(pk=intent.pk)


def _event(intent: PaymentIntent, type: str, dedupe_key: str, details: dict | None = None) -> Event:
    services.events_write(
        intent=intent,
        events=[(type, dedupe_key, None)],
        transactions=intents_transactions([intent])[intent.pk],
        details=details,
    )
    return intent.events.get(dedupe_key=dedupe_key)


def checkout_link_resendable(intent: PaymentIntent, now: datetime) -> bool:
    """Still payable: not yet paid, and its window (as extended) still open."""
    return intent.state in PAYABLE and now < intents_deadlines([intent])[intent.pk]


def checkout_link_resend(*, actor: User, intent: PaymentIntent, note: str, now: datetime, **context) -> Event:
    """Tell the merchant to send the customer the checkout link again (event
    `payment.checkout_link_resent`, whose snapshot has `checkout_url`)."""
    payment_require(actor, intent)
    note = note_check(note)
    with transaction.atomic():
        intent = _locked(intent)
        if not checkout_link_resendable(intent, now):
            raise Conflict(f"the payment is {intent.state} and no longer payable", code="not_payable")
        # Unique per resend: the intent's next event sequence number.
        event = _event(
            intent, "payment.checkout_link_resent", f"checkout_link_resent:{intent.event_sequence + 1}"
        )
        payment_audit(
            actor, "payment.checkout_link_resent", intent, None,
            {"event": event.pk, "checkout_url": event.payload["checkout_url"]}, note, now, **context,
        )  # fmt: skip
    return event


def top_up_request(
    *, actor: User, intent: PaymentIntent, until: datetime, note: str, now: datetime, **context
) -> PaymentIntent:
    """Ask for the rest of an underpaid payment by a new deadline: a resolution `extend_deadline`
    (evidence), which writes `payment.top_up_requested` with the remaining amount and its URI."""
    payment_require(actor, intent)
    note = note_check(note)
    before = intents_deadlines([intent])[intent.pk]
    with transaction.atomic():
        (resolution,) = services.resolution_record(
            intent_id=intent.pk,
            kind="extend_deadline",
            actor=actor,
            role=actor_roles(actor),
            reason=note,
            now=now,
            until=until,
        )
        payment_audit(
            actor, "payment.top_up_requested", intent, {"payment_deadline": before.isoformat()},
            {"payment_deadline": until.isoformat(), "resolution": resolution.pk}, note, now, **context,
        )  # fmt: skip
    return intent_queryset().get(pk=intent.pk)


def overpayment_excess(intent: PaymentIntent) -> int:
    return int(intent.amount_confirmed_base_units or 0) - int(intent.amount_due_base_units or 0)


def overpayment_decide(
    *, actor: User, intent: PaymentIntent, decision: str, note: str, now: datetime, **context
) -> OverpaymentDecision:
    """Record whether the excess of an overpaid payment is kept or refunded (the refund is made later);
    a new decision supersedes the current one. Tells the merchant (`payment.overpayment_decision`)."""
    payment_require(actor, intent)
    note = note_check(note)
    if decision not in OverpaymentDecision.Decision.values:
        raise InvalidRequest("decide keep or refund", code="invalid_decision", param="decision")
    with transaction.atomic():
        intent = _locked(intent)
        if intent.state != PaymentState.OVERPAID:
            raise Conflict(f"the payment is {intent.state}, not overpaid", code="not_overpaid")
        current = (
            OverpaymentDecision.objects.select_for_update().filter(intent=intent, superseded_at=None).first()
        )
        if current is not None:
            current.superseded_at = now
            current.save(update_fields=["superseded_at"])
        made = OverpaymentDecision.objects.create(
            intent=intent,
            merchant_id=intent.merchant_id,
            decision=decision,
            excess_base_units=overpayment_excess(intent),
            actor=actor,
            reason=note,
            decided_at=now,
        )
        details = {
            "overpayment_decision": {
                "decision": decision,
                "excess": {"base_units": str(made.excess_base_units)},
                "decided_at": now.isoformat(),
            }
        }
        _event(intent, "payment.overpayment_decision", f"overpayment_decision:{made.pk}", details)
        payment_audit(
            actor, "payment.overpayment_decision", intent,
            {"decision": current.decision} if current else None,
            {"decision": decision, "excess_base_units": str(made.excess_base_units)}, note, now, **context,
        )  # fmt: skip
    return made


def webhooks_replay(
    *,
    actor: User,
    intent: PaymentIntent,
    note: str,
    now: datetime,
    event_ids: list[str] | None = None,
    **context,
) -> int:
    """Deliver the payment's events (all, or those named) again to the merchant's enabled endpoints that
    subscribe to them (a replay keeps each event's webhook-id). Returns the deliveries queued."""
    payment_require(actor, intent)
    note = note_check(note)
    events = intent.events.order_by("sequence")
    if event_ids:
        events = events.filter(pk__in=event_ids)
    queued, replayed = 0, []
    with transaction.atomic():
        for event in events:
            try:
                queued += len(
                    event_redeliver(event=event, now=now, requested_by=f"admin:{actor.get_username()}")
                )
            except InvalidRequest as exc:
                if exc.code != "no_endpoint":
                    raise
                continue  # no enabled endpoint subscribes to this type
            replayed.append(event.pk)
        if not queued:
            raise Conflict(
                "no enabled webhook endpoint of the merchant subscribes to these events", code="no_endpoint"
            )
        payment_audit(
            actor, "payment.webhooks_replayed", intent, None, {"events": replayed, "deliveries": queued},
            note, now, **context,
        )  # fmt: skip
    return queued


def transaction_hash_attach(
    *,
    actor: User,
    intent: PaymentIntent,
    network_code: str,
    tx_hash: str,
    note: str,
    now: datetime,
    **context,
) -> list[ChainObservation]:
    """Look the transaction up on the network's node and record what it pays the intent's address, as
    the scanner would (payments' `transaction_attach` says why not otherwise). Audited when recorded."""
    payment_require(actor, intent)
    note = note_check(note)
    before = {"state": intent.state}
    with transaction.atomic():
        observations = transaction_attach(intent=intent, network_code=network_code, tx_hash=tx_hash, now=now)
        state = PaymentIntent.objects.values_list("state", flat=True).get(pk=intent.pk)
        after = {
            "state": state,
            "network": network_code,
            "tx_hash": observations[0].tx_hash if observations else tx_hash,
            "outputs": [o.output_index for o in observations],
        }
        payment_audit(actor, "payment.transaction_attached", intent, before, after, note, now, **context)
    return observations


def refund_transaction_hash_attach(
    *,
    actor: User,
    intent: PaymentIntent,
    refund_id: str,
    tx_hash: str,
    note: str,
    now: datetime,
    **context,
) -> Refund:
    """Look a refund's payment up on the node and record it if it pays the refund's destination exactly
    (payments' `refund_transaction_attach` says why not otherwise). Audited when recorded."""
    payment_require(actor, intent)
    note = note_check(note)
    refund = (
        Refund.objects.select_related("network_asset__network", "network_asset__asset")
        .filter(pk=refund_id, intent=intent)
        .first()
    )
    if refund is None:
        raise NotFound("no such refund of this payment", code="refund_not_found")
    before = {"refund": refund.pk, "state": refund.state}
    with transaction.atomic():
        refund = refund_transaction_attach(refund=refund, tx_hash=tx_hash, now=now)
        after = {"refund": refund.pk, "state": refund.state, "tx_hash": refund.observation.tx_hash}
        payment_audit(actor, "refund.transaction_attached", intent, before, after, note, now, **context)
    return refund

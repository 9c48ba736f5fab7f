"""A refund asked for by support (issue 13): a dangerous action of a support lead (permission
`support.decide_payment` on the merchant), with a reason, and four-eyes per the merchant's policy (as for
other decisions on a payment: above its threshold or always). Checked when submitted (the amount fits
within what was received, the address is one of the payment's network) and again when applied; applying
makes the refund, approved, in the payments app, where the chain decides the rest."""

from __future__ import annotations

from datetime import datetime

from payments import services
from payments.errors import InvalidRequest
from payments.models import Merchant, PaymentIntent

from .approvals import DangerousAction, dangerous_action

FIELDS = {"amount_kind", "value", "currency", "destination"}


def _check(*, merchant: Merchant, intent: PaymentIntent | None, payload: dict, now: datetime) -> None:
    if intent is None or intent.merchant_id != merchant.pk:
        raise InvalidRequest("a refund names the payment", code="parameter_missing")
    if set(payload) != FIELDS:
        raise InvalidRequest(f"a refund has exactly {', '.join(sorted(FIELDS))}", code="invalid_refund")
    services.refund_check(
        intent=intent,
        amount_kind=payload["amount_kind"],
        value=payload["value"],
        currency=payload["currency"],
        destination=payload["destination"],
        now=now,
    )


def _apply(*, actor, role, merchant, intent, payload, reason, now) -> dict:
    refund = services.refund_create(
        intent_id=intent.pk,
        amount_kind=payload["amount_kind"],
        value=payload["value"],
        currency=payload["currency"],
        destination=payload["destination"],
        reason=reason,
        requested_by=f"user:{actor.get_username()}",
        approved=True,
        now=now,
    )
    return {
        "refund": refund.pk,
        "amount_base_units": str(refund.amount_base_units),
        "state": PaymentIntent.objects.values_list("state", flat=True).get(pk=intent.pk),
        "refund_state": refund.state,
    }


REFUND = dangerous_action(
    DangerousAction(
        name="payment.refund",
        label="refund a payment",
        permission="support.decide_payment",
        check=_check,
        apply=_apply,
    )
)

"""A refund asked for by support (issue 13): a dangerous action of a support lead (permission
`support.decide_payment` on the merchant), with a reason, and four-eyes per the merchant's policy (as for
other decisions on a payment: above its threshold or always). Checked when submitted (the amount fits
within what was received, the address is one of the payment's network) and again when applied; applying
makes the refund, approved, in the payments app, where the chain decides the rest."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from payments import services
from payments.errors import InvalidRequest
from payments.models import Merchant, PaymentIntent
from payments.services.refund_checks import destination_normalize

from .approvals import DangerousAction, dangerous_action

FIELDS = {"amount_kind", "value", "currency", "destination", "amount_base_units", "rate"}


def refund_payload(
    *, intent: PaymentIntent, amount_kind: str, value: str | None, currency: str | None, destination: str, now
) -> dict:
    """What a lead asks, with the amount it comes to now in base units (and a fiat amount's rate): the
    approver approves exactly that amount, which must still fit when applied."""
    units, evidence = services.refund_check(
        intent=intent,
        amount_kind=amount_kind,
        value=value,
        currency=currency,
        destination=destination,
        now=now,
    )
    rate = None
    if evidence:
        rate = {
            "fiat_amount": f"{evidence['fiat_amount']:f}",
            "fiat_currency": evidence["fiat_currency"],
            "rate": f"{evidence['rate']:f}",
            "rate_source": evidence["rate_source"],
            "rate_time": evidence["rate_time"].isoformat(),
        }
    return {
        "amount_kind": amount_kind,
        "value": value,
        "currency": currency,
        "destination": destination,
        "amount_base_units": str(units),
        "rate": rate,
    }


def _fixed(payload: dict):
    rate = payload["rate"]
    evidence = {}
    if rate:
        evidence = {
            "fiat_amount": Decimal(rate["fiat_amount"]),
            "fiat_currency": rate["fiat_currency"],
            "rate": Decimal(rate["rate"]),
            "rate_source": rate["rate_source"],
            "rate_time": datetime.fromisoformat(rate["rate_time"]),
        }
    return int(payload["amount_base_units"]), evidence


def _check(*, merchant: Merchant, intent: PaymentIntent | None, payload: dict, now: datetime) -> None:
    if intent is None or intent.merchant_id != merchant.pk:
        raise InvalidRequest("a refund names the payment", code="parameter_missing")
    if set(payload) != FIELDS:
        raise InvalidRequest(f"a refund has exactly {', '.join(sorted(FIELDS))}", code="invalid_refund")
    try:
        fixed = _fixed(payload)
    except (TypeError, ValueError, KeyError, InvalidOperation) as exc:
        raise InvalidRequest(
            "the refund's amount is not a number of base units", code="invalid_refund"
        ) from exc
    services.refund_check(
        intent=intent,
        amount_kind=payload["amount_kind"],
        value=payload["value"],
        currency=payload["currency"],
        destination=payload["destination"],
        now=now,
        fixed=fixed,
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
        fixed=_fixed(payload),
    )
    return {
        "refund": refund.pk,
        "amount_base_units": str(refund.amount_base_units),
        "state": PaymentIntent.objects.values_list("state", flat=True).get(pk=intent.pk),
        "refund_state": refund.state,
    }


def _at_stake(intent: PaymentIntent, payload: dict) -> Decimal:
    """The refund in the payment's price currency, at the payment's own quote: an overpayment refunded
    in full can be worth far more than the order (what four-eyes above an amount must see)."""
    due = int(intent.amount_due_base_units or 0)
    if due <= 0:
        return intent.price_amount
    return intent.price_amount * Decimal(int(payload["amount_base_units"])) / Decimal(due)


REFUND = dangerous_action(
    DangerousAction(
        name="payment.refund",
        label="refund a payment",
        permission="support.decide_payment",
        check=_check,
        apply=_apply,
        amount_at_stake=_at_stake,
    )
)


def _own_refund(merchant: Merchant, intent: PaymentIntent | None, payload: dict):
    from payments.models import Refund

    refund = Refund.objects.filter(pk=payload.get("refund"), merchant=merchant).first()
    if intent is None or refund is None or refund.intent_id != intent.pk:
        raise InvalidRequest("no such refund of this payment", code="refund_not_found")
    return refund


def _change_check(*, merchant: Merchant, intent: PaymentIntent | None, payload: dict, now: datetime) -> None:
    if set(payload) != {"refund", "destination", "cancel"}:
        raise InvalidRequest("a refund change has exactly refund, destination, cancel", code="invalid_refund")
    refund = _own_refund(merchant, intent, payload)
    if refund.state not in ("requested", "approved", "awaiting_payment"):
        raise InvalidRequest(f"the refund is {refund.state}: it cannot change now", code="refund_closed")
    if not payload["cancel"]:
        destination_normalize(intent, payload["destination"])


def _change_apply(*, actor, role, merchant, intent, payload, reason, now) -> dict:
    refund = _own_refund(merchant, intent, payload)
    by = f"user:{actor.get_username()}"
    if payload["cancel"]:
        refund = services.refund_cancel(refund_id=refund.pk, canceled_by=by, now=now)
    else:
        refund = services.refund_destination_set(
            refund_id=refund.pk, address=payload["destination"], set_by=by, now=now, replace_ok=True
        )
    return {"refund": refund.pk, "refund_state": refund.state, "destination": refund.destination}


REFUND_CHANGE = dangerous_action(
    DangerousAction(
        name="refund.change",
        label="change a refund's address or cancel it",
        permission="support.decide_payment",
        check=_change_check,
        apply=_change_apply,
    )
)

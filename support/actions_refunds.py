"""The payment page's refund action (support leads): how much (everything received, the excess, a fiat
amount at today's rate, or a custom amount), to where (optional: without it the refund waits for the
customer's address from the refund page), and why. It goes through `support.approvals` (permission,
merchant, four-eyes per the merchant's policy, audit) as the action `payment.refund`; the page says whether
a second lead must approve it. The merchant's wallet pays the refund; the chain confirms it."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from payments.models import PaymentIntent, Refund
from payments.pricing import FIAT_CURRENCIES
from payments.selectors_refunds import amount_received
from payments.services.refund_checks import amount_held
from payments.services.resolutions import REASON_MIN_CHARACTERS

from .actions_dangerous import dangerous_page
from .console import payment_action
from .dangerous import DECIDE_PAYMENT
from .dangerous_refunds import REFUND, REFUND_CHANGE, refund_payload
from .payment_page import intent_amount_text

EXPLANATION = (
    "The merchant pays the refund from its own wallet; the gateway watches the customer's address and "
    "accepts a transfer of exactly this amount from any address. Leave the address empty to let the "
    "customer enter it on the refund page (a signed link the merchant receives). Never use the address the "
    "payment came from: exchanges pay from shared wallets."
)


class RefundForm(forms.Form):
    amount_kind = forms.ChoiceField(
        label="amount", choices=Refund.AmountKind.choices, widget=forms.RadioSelect, initial="received"
    )
    value = forms.DecimalField(
        required=False, min_value=0, max_digits=40, decimal_places=18, help_text="fiat or custom amount"
    )
    currency = forms.ChoiceField(
        required=False, choices=[("", "-")] + [(c, c) for c in FIAT_CURRENCIES], help_text="for a fiat amount"
    )
    destination = forms.CharField(
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"size": 70, "autocomplete": "off"}),
        help_text="the customer's address on the payment's network, if known",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        min_length=REASON_MIN_CHARACTERS,
        help_text="At least a sentence: kept with the refund and in the audit log.",
    )

    def clean(self):
        data = super().clean()
        kind = data.get("amount_kind")
        if kind in ("fiat", "custom") and data.get("value") in (None, ""):
            self.add_error("value", "a fiat or custom refund needs its amount")
        if kind == "fiat" and not data.get("currency"):
            self.add_error("currency", "a fiat refund needs its currency")
        return data


REFUNDABLE_STATES = ("paid", "overpaid", "underpaid")
EXTRA_FUNDS = ("late_payment", "duplicate_payment")


def _refundable(intent: PaymentIntent) -> bool:
    """Funds arrived in the payment's asset: counted, late or duplicate (the page checks the exact sum)."""
    if intent.network_asset_id is None:
        return False
    return intent.state in REFUNDABLE_STATES or any(flag in EXTRA_FUNDS for flag in intent.flags or [])


@payment_action(
    "refund",
    label="Refund…",
    permission=DECIDE_PAYMENT,
    applies=_refundable,
    dangerous=True,
    description=EXPLANATION,
)
def refund_view(request: HttpRequest, intent: PaymentIntent, context: dict) -> HttpResponse:
    def payload_of(data: dict) -> dict:
        kind = data["amount_kind"]
        return refund_payload(
            intent=intent,
            amount_kind=kind,
            value=f"{data['value']:f}" if kind in ("fiat", "custom") else None,
            currency=data["currency"] if kind == "fiat" else None,
            destination=data["destination"].strip(),
            now=timezone.now(),
        )

    received = amount_received(intent)
    return dangerous_page(
        request,
        intent,
        context,
        spec=REFUND,
        form=RefundForm(request.POST if request.method == "POST" else None),
        verb="Refund",
        explanation=EXPLANATION,
        payload_of=payload_of,
        applied=lambda result: f"Refund {result['refund']} made: the merchant pays it now.",
        extra={
            "received": intent_amount_text(intent, received),
            "refundable": intent_amount_text(intent, received - amount_held(intent)),
        },
    )


def _changeable(intent: PaymentIntent):
    return Refund.objects.filter(
        intent=intent, state__in=[Refund.State.APPROVED, Refund.State.AWAITING_PAYMENT]
    ).order_by("created_at")


class RefundChangeForm(forms.Form):
    refund = forms.ChoiceField()
    cancel = forms.BooleanField(
        required=False, label="cancel the refund", help_text="instead of a new address"
    )
    destination = forms.CharField(
        required=False,
        max_length=100,
        label="new address",
        widget=forms.TextInput(attrs={"size": 70, "autocomplete": "off"}),
        help_text="the customer's address on the payment's network (checked before anything is asked)",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        min_length=REASON_MIN_CHARACTERS,
        help_text="At least a sentence: why the address changes (who confirmed it) or why it is canceled.",
    )

    def __init__(self, *args, intent: PaymentIntent, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["refund"].choices = [
            (r.pk, f"{r.pk}: {r.get_state_display()}, to {r.destination or '(no address yet)'}")
            for r in _changeable(intent)
        ]

    def clean(self):
        data = super().clean()
        if not data.get("cancel") and not (data.get("destination") or "").strip():
            self.add_error("destination", "a new address, or tick cancel")
        return data


CHANGE_EXPLANATION = (
    "A refund's address changes only while no payment to it has been seen: a customer's typo, or an address "
    "the customer confirmed to you another way. Canceling frees its amount. Both are decisions on money: a "
    "reason, and a second lead's approval where the merchant's policy asks."
)


@payment_action(
    "change_refund",
    label="Change a refund's address or cancel it…",
    permission=DECIDE_PAYMENT,
    applies=lambda intent: _changeable(intent).exists(),
    dangerous=True,
    description=CHANGE_EXPLANATION,
)
def change_refund_view(request: HttpRequest, intent: PaymentIntent, context: dict) -> HttpResponse:
    def payload_of(data: dict) -> dict:
        return {
            "refund": data["refund"],
            "cancel": bool(data["cancel"]),
            "destination": "" if data["cancel"] else data["destination"].strip(),
        }

    return dangerous_page(
        request,
        intent,
        context,
        spec=REFUND_CHANGE,
        form=RefundChangeForm(request.POST if request.method == "POST" else None, intent=intent),
        verb="Change the refund",
        explanation=CHANGE_EXPLANATION,
        payload_of=payload_of,
        applied=lambda result: f"Refund {result['refund']} is {result['refund_state']}.",
    )

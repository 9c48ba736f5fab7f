"""The payment page's dangerous actions (support leads): accept a late payment, accept an underpayment,
mark paid, cancel. Each page shows the payment in the asset's units, says whether the merchant's policy
sends the decision for a second lead's approval, and takes a reason; the decision goes through
`support.approvals` (permission, merchant, four-eyes, audit) and `payments.services.resolution_record`."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import quote
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from payments import policy
from payments.errors import GatewayError
from payments.models import ChainObservation, PaymentIntent, Resolution
from payments.selectors import intent_evaluate
from payments.services.resolutions import REASON_MIN_CHARACTERS

from .approvals import DANGEROUS_ACTIONS, dangerous_action_submit, four_eyes_required
from .audit import request_audit_context
from .console import payment_action
from .dangerous import DECIDE_PAYMENT
from .payment_page import amount_text, intent_amount_text

LATE = (policy.LATE, policy.AFTER_MONITORING_WINDOW)


class DecisionForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        min_length=REASON_MIN_CHARACTERS,
        help_text="At least a sentence: kept with the decision and in the audit log.",
    )

    def __init__(self, *args, late_outputs=(), **kwargs):
        super().__init__(*args, **kwargs)
        if late_outputs:
            self.fields["observation"] = forms.TypedChoiceField(
                label="late transaction",
                coerce=int,
                choices=[(o.pk, label) for o, label in late_outputs],
                widget=forms.RadioSelect,
            )


def late_outputs(intent: PaymentIntent) -> list[tuple[ChainObservation, str]]:
    """The outputs a fresh evaluation calls late, with a label in the asset's units."""
    verdict = intent_evaluate(intent, timezone.now())
    found = []
    for o in ChainObservation.objects.filter(intent=intent).select_related("network", "network_asset__asset"):
        if verdict.classifications.get((o.network.code, o.tx_hash, o.output_index)) in LATE:
            asset = o.network_asset
            amount = (
                amount_text(o.amount_base_units, asset.decimals, asset.asset.code)
                if asset
                else f"{o.amount_base_units} base units"
            )
            seen = min(t for t in (o.seen_unconfirmed_at, o.block_time) if t is not None)
            found.append(
                (o, f"{o.tx_hash} #{o.output_index}: {amount}, first seen {seen:%Y-%m-%d %H:%M:%S} UTC")
            )
    return found


def dangerous_page(
    request: HttpRequest,
    intent: PaymentIntent,
    context: dict,
    *,
    spec,
    form: forms.Form,
    verb: str,
    explanation: str,
    payload_of: Callable[[dict], dict],
    applied: Callable[[dict], str],
    extra: dict | None = None,
) -> HttpResponse:
    """A decision page of the payment page: GET shows the payment, whether the merchant's policy sends the
    decision to a second lead, and `form`; a valid POST builds the payload (`payload_of`, which may refuse
    with a GatewayError) and submits it through `support.approvals`, then returns to the payment with
    `applied(result)` or the approval request's number; a refusal shows the form again with its message."""
    payment_url = reverse("admin:payments_paymentintent_change", args=[quote(intent.pk)])
    if request.method == "POST" and form.is_valid():
        try:
            submitted = dangerous_action_submit(
                actor=request.user,
                action=spec.name,
                merchant=intent.merchant,
                intent=intent,
                payload=payload_of(form.cleaned_data),
                reason=form.cleaned_data["reason"],
                now=timezone.now(),
                **request_audit_context(request),
            )
        except GatewayError as exc:
            form.add_error(None, f"{exc.message} ({exc.code})")
        else:
            if submitted.applied:
                messages.success(request, applied(submitted.result))
            else:
                messages.warning(
                    request,
                    f"Approval request {submitted.approval.pk} sent: another support lead must approve it "
                    f"before {submitted.approval.expires_at:%Y-%m-%d %H:%M} UTC.",
                )
            return HttpResponseRedirect(payment_url)
    return TemplateResponse(
        request,
        "admin/support/dangerous_action.html",
        {
            **context,
            "title": f"{verb}: {intent.pk}",
            "intent": intent,
            "verb": verb,
            "explanation": explanation,
            "four_eyes": four_eyes_required(spec, intent.merchant, intent),
            "form": form,
            "amount_due": intent_amount_text(intent, intent.amount_due_base_units),
            "amount_confirmed": intent_amount_text(intent, intent.amount_confirmed_base_units),
            "amount_seen": intent_amount_text(intent, intent.amount_seen_base_units),
            "payment_url": payment_url,
            **(extra or {}),
        },
        status=400 if request.method == "POST" else 200,
    )


def decision_view(kind: str, verb: str, explanation: str):
    action_name = f"payment.{kind}"

    def view(request: HttpRequest, intent: PaymentIntent, context: dict) -> HttpResponse:
        outputs = late_outputs(intent) if kind == Resolution.Kind.ACCEPT_LATE_PAYMENT else []
        form = DecisionForm(request.POST if request.method == "POST" else None, late_outputs=outputs)

        def payload_of(data: dict) -> dict:
            return {"observation_id": data["observation"]} if "observation" in data else {}

        return dangerous_page(
            request,
            intent,
            context,
            spec=DANGEROUS_ACTIONS[action_name],
            form=form,
            verb=verb,
            explanation=explanation,
            payload_of=payload_of,
            applied=lambda result: f"{verb}: the payment is now {result['state']}.",
        )

    return view


def _late(intent: PaymentIntent) -> bool:
    return "late_payment" in (intent.flags or [])


def _underpaid(intent: PaymentIntent) -> bool:
    return intent.state == policy.UNDERPAID


def _unpaid_with_asset(intent: PaymentIntent) -> bool:
    return intent.network_asset_id is not None and intent.state not in (
        policy.PAID,
        policy.OVERPAID,
        policy.REFUNDED,
    )


def _cancelable(intent: PaymentIntent) -> bool:
    return intent.state in (policy.CREATED, policy.AWAITING_PAYMENT) and not intent.amount_seen_base_units


for kind, label, verb, applies, explanation in (
    (
        Resolution.Kind.ACCEPT_LATE_PAYMENT,
        "Accept a late payment",
        "Late payment accepted",
        _late,
        "Funds that arrived after the deadline count as if on time. Choose the transaction.",
    ),
    (
        Resolution.Kind.ACCEPT_UNDERPAYMENT,
        "Accept the underpayment",
        "Underpayment accepted",
        _underpaid,
        "The confirmed funds settle the payment although they are short of the amount due.",
    ),
    (
        Resolution.Kind.MARK_PAID,
        "Mark paid",
        "Marked paid",
        _unpaid_with_asset,
        "The payment becomes paid whatever the chain shows: only with proof of payment outside the gateway.",
    ),
    (
        Resolution.Kind.CANCEL,
        "Cancel the payment",
        "Canceled",
        _cancelable,
        "The payment window closes now; funds that arrive later are late payments.",
    ),
):
    payment_action(
        kind,
        label=label,
        permission=DECIDE_PAYMENT,
        applies=applies,
        dangerous=True,
        description=explanation,
    )(decision_view(kind, verb, explanation))

"""The safe actions on a payment, as the console's payment actions (support.console): each view shows a
small form with the facts the agent needs on GET, and on POST calls one service of
`support.payment_actions` / `support.escalation` (which check permission and scope again), then goes back
to the payment's page with a message saying what happened, or shows the form again saying why not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import quote
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from payments.errors import GatewayError
from payments.models import PaymentIntent, PaymentState, Refund
from payments.selectors import amount_remaining, intents_deadlines, payment_uri_remaining
from payments.services.attach import attachable_networks

from . import payment_actions as actions
from .audit import request_audit_context
from .console import payment_action
from .escalation import stray_funds, wrong_network_escalate
from .models import OverpaymentDecision
from .payment_page import intent_amount_text

PERMISSION = actions.ACTION_PERMISSION
NOTE_HELP = "Kept in the audit log with the action: say why."


class NoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), help_text=NOTE_HELP)


class TopUpForm(NoteForm):
    hours = forms.IntegerField(
        min_value=1, max_value=24 * 30, initial=24, label="Hours from now", help_text="the new deadline"
    )
    field_order = ["hours", "note"]


class OverpaymentForm(NoteForm):
    decision = forms.ChoiceField(choices=OverpaymentDecision.Decision.choices, widget=forms.RadioSelect)
    field_order = ["decision", "note"]


class ReplayForm(NoteForm):
    events = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="none ticked: every event of the payment",
    )
    field_order = ["events", "note"]

    def __init__(self, *args, intent: PaymentIntent, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["events"].choices = [
            (pk, f"#{sequence} {type}")
            for pk, sequence, type in intent.events.order_by("sequence").values_list("pk", "sequence", "type")
        ]


class AttachForm(NoteForm):
    network = forms.ChoiceField()
    tx_hash = forms.CharField(max_length=80, label="Transaction hash")
    field_order = ["network", "tx_hash", "note"]

    def __init__(self, *args, intent: PaymentIntent, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["network"].choices = [(n.code, n.name) for n in attachable_networks(intent)]


_context = request_audit_context


def _payment_page(intent: PaymentIntent) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:payments_paymentintent_change", args=[quote(intent.pk)]))


def _asset_amount(intent: PaymentIntent, base_units: int | None) -> str | None:
    return intent_amount_text(intent, base_units, missing=None)  # None: the fact is left off the page


def _page(request, intent, context, *, title, form, facts=(), description="", submit="Confirm", status=200):
    return TemplateResponse(
        request,
        "admin/support/payment_action.html",
        {
            **context,
            "title": title,
            "intent": intent,
            "form": form,
            "facts": [(label, value) for label, value in facts if value not in (None, "")],
            "description": description,
            "submit": submit,
            "payment_url": reverse("admin:payments_paymentintent_change", args=[quote(intent.pk)]),
        },
        status=status,
    )


def _act(request, intent, context, form, page: dict, act: Callable[[dict], str]) -> HttpResponse:
    """GET: the form. POST: validate, run `act` (the service call; returns the success message), back to
    the payment; a refusal from the service shows the form again with its message."""
    if request.method == "POST" and form.is_valid():
        try:
            done = act(form.cleaned_data | _context(request))
        except GatewayError as exc:  # a refusal saying why; PermissionDenied goes on to a 403
            messages.error(request, exc.message)
            return _page(request, intent, context, form=form, status=409, **page)
        messages.success(request, done)
        return _payment_page(intent)
    return _page(request, intent, context, form=form, status=400 if form.is_bound else 200, **page)


def _bound(request, form_class, **kwargs):
    return form_class(request.POST if request.method == "POST" else None, **kwargs)


def _request_kwargs(data: dict) -> dict:
    return {"request_id": data["request_id"], "client_address": data["client_address"]}


@payment_action(
    "resend_checkout_link",
    label="Resend the checkout link",
    permission=PERMISSION,
    applies=lambda intent: actions.checkout_link_resendable(intent, timezone.now()),
    description="Tells the merchant (event payment.checkout_link_resent) to send the customer the link again.",
)
def resend_checkout_link(request, intent, context):
    from payments.selectors import intent_representation

    url = intent_representation(intent)["checkout_url"]

    def act(data):
        actions.checkout_link_resend(
            actor=request.user, intent=intent, note=data["note"], now=timezone.now(), **_request_kwargs(data)
        )
        return f"The merchant was sent the checkout link again (payment.checkout_link_resent): {url}"

    page = {
        "title": "Resend the checkout link",
        "facts": [("Checkout link (copy it)", url)],
        "submit": "Resend",
    }
    return _act(request, intent, context, _bound(request, NoteForm), page, act)


@payment_action(
    "request_top_up",
    label="Request a top-up",
    permission=PERMISSION,
    applies=lambda intent: intent.state == PaymentState.UNDERPAID,
    description="A new deadline for the rest of an underpaid payment; funds first seen before it count.",
)
def request_top_up(request, intent, context):
    def act(data):
        now = timezone.now()
        updated = actions.top_up_request(
            actor=request.user,
            intent=intent,
            until=now + timedelta(hours=data["hours"]),
            note=data["note"],
            now=now,
            **_request_kwargs(data),
        )
        remaining = _asset_amount(updated, amount_remaining(updated))
        return (
            f"Top-up requested until {intents_deadlines([updated])[updated.pk]:%Y-%m-%d %H:%M} UTC: "
            f"{remaining} left to pay, payment URI {payment_uri_remaining(updated)}"
        )

    page = {
        "title": "Request a top-up",
        "description": "The merchant receives payment.top_up_requested with the amount left and its URI.",
        "facts": [
            ("Left to pay", _asset_amount(intent, amount_remaining(intent))),
            ("Current deadline", f"{intents_deadlines([intent])[intent.pk]:%Y-%m-%d %H:%M} UTC"),
            ("Payment URI for the rest", payment_uri_remaining(intent)),
        ],
        "submit": "Request the top-up",
    }
    return _act(request, intent, context, _bound(request, TopUpForm), page, act)


@payment_action(
    "decide_overpayment",
    label="Decide on the overpayment",
    permission=PERMISSION,
    applies=lambda intent: intent.state == PaymentState.OVERPAID,
    description="Keep or refund the excess (the refund itself is made by the refunds flow).",
)
def decide_overpayment(request, intent, context):
    excess = _asset_amount(intent, actions.overpayment_excess(intent))
    current = intent.overpayment_decisions.filter(superseded_at=None).first()

    def act(data):
        made = actions.overpayment_decide(
            actor=request.user,
            intent=intent,
            decision=data["decision"],
            note=data["note"],
            now=timezone.now(),
            **_request_kwargs(data),
        )
        return f"Decision recorded: {made.get_decision_display()} ({excess}); the merchant was told."

    page = {
        "title": "Decide on the overpayment",
        "facts": [
            ("Excess", excess),
            ("Current decision", current.get_decision_display() if current else "none yet"),
        ],
        "submit": "Record the decision",
    }
    return _act(request, intent, context, _bound(request, OverpaymentForm), page, act)


@payment_action(
    "replay_webhooks",
    label="Replay the webhooks",
    permission=PERMISSION,
    description="Delivers the payment's events (all, or those ticked) again to the merchant's enabled endpoints.",
)
def replay_webhooks(request, intent, context):
    def act(data):
        queued = actions.webhooks_replay(
            actor=request.user,
            intent=intent,
            note=data["note"],
            now=timezone.now(),
            event_ids=data["events"],
            **_request_kwargs(data),
        )
        return f"{queued} deliveries queued again (same webhook-id as the originals)."

    page = {"title": "Replay the payment's webhooks", "submit": "Replay"}
    return _act(request, intent, context, _bound(request, ReplayForm, intent=intent), page, act)


@payment_action(
    "attach_transaction",
    label="Attach a transaction hash",
    permission=PERMISSION,
    applies=lambda intent: intent.address_id is not None,
    description="Looks the transaction up on the network's node and records it if it pays this payment.",
)
def attach_transaction(request, intent, context):
    def act(data):
        observations = actions.transaction_hash_attach(
            actor=request.user,
            intent=intent,
            network_code=data["network"],
            tx_hash=data["tx_hash"],
            note=data["note"],
            now=timezone.now(),
            **_request_kwargs(data),
        )
        state = PaymentIntent.objects.values_list("state", flat=True).get(pk=intent.pk)
        return (
            f"Transaction recorded ({len(observations)} output(s) to this payment); the payment is {state}."
        )

    page = {
        "title": "Attach a transaction hash",
        "facts": [("Payment address", intent.address.address if intent.address else None)],
        "submit": "Look it up",
    }
    return _act(request, intent, context, _bound(request, AttachForm, intent=intent), page, act)


class RefundAttachForm(NoteForm):
    refund = forms.ChoiceField()
    tx_hash = forms.CharField(max_length=80, label="Transaction hash")
    field_order = ["refund", "tx_hash", "note"]

    def __init__(self, *args, intent: PaymentIntent, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["refund"].choices = [
            (r.pk, f"{r.pk}: {r.get_state_display()}, to {r.destination}") for r in _refunds_to_attach(intent)
        ]


def _refunds_to_attach(intent: PaymentIntent):
    return Refund.objects.filter(
        intent=intent,
        state=Refund.State.AWAITING_PAYMENT,
        destination__gt="",
        observation__isnull=True,
    ).order_by("created_at")


@payment_action(
    "attach_refund_transaction",
    label="Attach a refund's transaction hash",
    permission=PERMISSION,
    applies=lambda intent: _refunds_to_attach(intent).exists(),
    description="Looks the transaction up on the node and records it if it pays a refund's destination exactly.",
)
def attach_refund_transaction(request, intent, context):
    def act(data):
        refund = actions.refund_transaction_hash_attach(
            actor=request.user,
            intent=intent,
            refund_id=data["refund"],
            tx_hash=data["tx_hash"],
            note=data["note"],
            now=timezone.now(),
            **_request_kwargs(data),
        )
        return f"Transaction recorded: refund {refund.pk} is {refund.state}."

    page = {"title": "Attach a refund's transaction hash", "submit": "Look it up"}
    return _act(request, intent, context, _bound(request, RefundAttachForm, intent=intent), page, act)


@payment_action(
    "escalate_wrong_network",
    label="Escalate to a lead (wrong network)",
    permission=PERMISSION,
    applies=lambda intent: "wrong_network" in (intent.flags or []),
    description="Marks the wrong-network case escalated, with the facts a lead needs to help recover.",
)
def escalate_wrong_network(request, intent, context):
    def act(data):
        case = wrong_network_escalate(
            actor=request.user, intent=intent, note=data["note"], now=timezone.now(), **_request_kwargs(data)
        )
        return f"Case {case.pk} escalated to the support leads."

    facts = []
    for f in stray_funds(intent):
        facts += [
            (f"Arrived on {f.network}", f.amount),
            ("Transaction", f.tx_hash),
        ]
        if f.same_key:
            facts.append(
                (
                    "Recovery",
                    f"{f.address} on {f.network} is the same address, controlled by the merchant's own key "
                    f"(their wallet's xpub derives it on every EVM network): the merchant can move these "
                    f"funds themselves.",
                )
            )
    page = {"title": "Escalate the wrong-network payment", "facts": facts, "submit": "Escalate"}
    return _act(request, intent, context, _bound(request, NoteForm), page, act)

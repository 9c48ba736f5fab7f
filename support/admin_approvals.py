"""Four-eyes in the console: the approval requests (scoped to the user's merchants) with an approve /
reject panel shown only to someone who may decide (not the maker, holding the action's permission on
the merchant), and the merchants' policies, changed through a dangerous action of their own."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from payments.admin_access import MerchantListFilter, MerchantScopedAdmin, staff_merchants
from payments.errors import GatewayError
from payments.services.resolutions import REASON_MIN_CHARACTERS

from .approvals import DANGEROUS_ACTIONS, approval_decide, dangerous_action_submit, may_take
from .audit import request_audit_context
from .dangerous import POLICY_SET, policy_of, policy_payload
from .models import ApprovalRequest, MerchantPolicy


def approval_facts(approval: ApprovalRequest) -> list[tuple[str, str]]:
    """What the checker needs to see to decide, in people's units: the payment as it is now (state,
    price, amounts in the asset's units) and the transaction named, or the change asked for."""
    from payments.models import ChainObservation

    from .payment_page import intent_amount_text as amount_text

    facts: list[tuple[str, str]] = []
    intent = approval.intent
    if intent is not None:
        facts += [
            ("payment", f"{intent.pk} ({intent.merchant_order_id or 'no order id'})"),
            ("state now", intent.state + (f" ({', '.join(intent.flags)})" if intent.flags else "")),
            ("price", f"{intent.price_amount.normalize():f} {intent.price_currency}"),
            ("amount due", amount_text(intent, intent.amount_due_base_units)),
            (
                "seen / confirmed",
                f"{amount_text(intent, intent.amount_seen_base_units)} / "
                f"{amount_text(intent, intent.amount_confirmed_base_units)}",
            ),
        ]
        observation_id = (approval.payload or {}).get("observation_id")
        if observation_id:
            o = (
                ChainObservation.objects.select_related("network_asset__asset")
                .filter(pk=observation_id)
                .first()
            )
            if o is not None:
                facts.append(
                    (
                        "transaction",
                        f"{o.tx_hash} #{o.output_index} on {o.network_id}: "
                        f"{amount_text(intent, o.amount_base_units)}",
                    )
                )
    else:
        facts += [
            (key.replace("_", " "), "-" if value in (None, "") else str(value))
            for key, value in (approval.payload or {}).items()
        ]
    facts += [
        ("asked by", f"{approval.maker.get_username()} ({approval.maker_role or 'no role'})"),
        ("reason", approval.reason),
        ("expires", f"{approval.expires_at:%Y-%m-%d %H:%M} UTC"),
    ]
    return facts


class DecideForm(forms.Form):
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 70}),
        help_text="Required to reject: say why.",
    )


_request_context = request_audit_context


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(MerchantScopedAdmin, admin.ModelAdmin):
    list_display = (
        "id",
        "action",
        "merchant",
        "payment",
        "maker",
        "status",
        "created_at",
        "expires_at",
        "checker",
    )
    list_filter = ("status", "action", ("merchant", MerchantListFilter))
    search_fields = ("intent__id", "merchant__id", "maker__username", "checker__username")
    readonly_fields = [f.name for f in ApprovalRequest._meta.fields]
    change_form_template = "admin/support/approvalrequest/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("merchant", "maker", "checker")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="payment")
    def payment(self, approval):
        if not approval.intent_id:
            return "-"
        url = reverse("admin:payments_paymentintent_change", args=[quote(approval.intent_id)])
        return format_html('<a href="{}">{}</a>', url, approval.intent_id)

    def may_decide(self, request, approval) -> bool:
        spec = DANGEROUS_ACTIONS.get(approval.action)
        return (
            approval.status == ApprovalRequest.Status.PENDING
            and approval.maker_id != request.user.pk
            and spec is not None
            and may_take(request.user, spec, approval.merchant_id)
        )

    def get_urls(self):
        return [
            path(
                "<int:approval_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="support_approvalrequest_decide",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        approval = self.get_object(request, object_id)
        extra = {"decide_form": None, "why_not": ""}
        if approval is not None:
            extra["facts"] = approval_facts(approval)
            if approval.status == ApprovalRequest.Status.PENDING and timezone.now() >= approval.expires_at:
                extra["why_not"] = (
                    "This request has expired: nothing will be applied. Ask again if still needed."
                )
            elif self.may_decide(request, approval):
                extra["decide_form"] = DecideForm()
            elif approval.status != ApprovalRequest.Status.PENDING:
                extra["why_not"] = f"This request is {approval.get_status_display()}."
            elif approval.maker_id == request.user.pk:
                extra["why_not"] = "You asked for this: another person must approve or reject it."
            else:
                extra["why_not"] = "You may not decide this request."
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def decide_view(self, request, approval_id):
        approval = get_object_or_404(self.get_queryset(request), pk=approval_id)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:support_approvalrequest_change", args=[approval.pk]))
        if not self.may_decide(request, approval):
            raise PermissionDenied
        form = DecideForm(request.POST)
        form.is_valid()
        approve = "approve" in request.POST
        try:
            decided = approval_decide(
                actor=request.user,
                approval_id=approval.pk,
                approve=approve,
                note=form.cleaned_data.get("note", ""),
                now=timezone.now(),
                **_request_context(request),
            )
        except GatewayError as exc:
            messages.error(request, f"{exc.message} ({exc.code})")
        else:
            if decided.status == ApprovalRequest.Status.APPROVED:
                state = (decided.result or {}).get("state")
                done = f"the payment is now {state}" if state else "the change is applied"
                messages.success(request, f"Approved and applied: {done}.")
            elif decided.status == ApprovalRequest.Status.FAILED:
                messages.error(request, f"Approved, but it could not be applied: {decided.result['message']}")
            else:
                messages.info(request, "Rejected.")
        return HttpResponseRedirect(reverse("admin:support_approvalrequest_change", args=[approval.pk]))


class PolicyForm(forms.Form):
    four_eyes = forms.ChoiceField(
        choices=MerchantPolicy.FourEyes.choices,
        widget=forms.RadioSelect,
        label="second lead's approval for decisions on payments",
    )
    threshold_amount = forms.DecimalField(
        required=False, min_value=0, max_digits=40, decimal_places=18, label="above this price"
    )
    threshold_currency = forms.CharField(required=False, max_length=12, label="price currency")
    config_four_eyes = forms.BooleanField(
        required=False, label="a second person approves wallet key and policy changes"
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), min_length=REASON_MIN_CHARACTERS
    )


@admin.register(MerchantPolicy)
class MerchantPolicyAdmin(MerchantScopedAdmin, admin.ModelAdmin):
    """The list shows every merchant the user may see with its policy (the default where none is
    stored); changes go through `merchant.policy_set`, a dangerous action."""

    list_display = (
        "merchant",
        "four_eyes",
        "threshold_amount",
        "threshold_currency",
        "config_four_eyes",
        "updated_at",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path(
                "merchant/<str:merchant_id>/",
                self.admin_site.admin_view(self.propose_view),
                name="support_merchantpolicy_propose",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = [
            {
                "merchant": merchant,
                "policy": policy_of(merchant),
                "stored": MerchantPolicy.objects.filter(merchant=merchant).exists(),
                "may_change": may_take(request.user, POLICY_SET, merchant.pk),
            }
            for merchant in staff_merchants(request.user).order_by("name", "pk")
        ]
        return TemplateResponse(
            request,
            "admin/support/merchantpolicy/list.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Merchant policies",
                "rows": rows,
            },
        )

    def propose_view(self, request, merchant_id):
        merchant = get_object_or_404(staff_merchants(request.user), pk=merchant_id)
        if not may_take(request.user, POLICY_SET, merchant.pk):
            raise PermissionDenied
        current = policy_of(merchant)
        form = PolicyForm(request.POST if request.method == "POST" else None, initial=current)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            payload = policy_payload(
                four_eyes=data["four_eyes"],
                threshold_amount=data["threshold_amount"],
                threshold_currency=data["threshold_currency"],
                config_four_eyes=data["config_four_eyes"],
            )
            try:
                submitted = dangerous_action_submit(
                    actor=request.user,
                    action=POLICY_SET.name,
                    merchant=merchant,
                    payload=payload,
                    reason=data["reason"],
                    now=timezone.now(),
                    **_request_context(request),
                )
            except GatewayError as exc:
                form.add_error(None, f"{exc.message} ({exc.code})")
            else:
                if submitted.applied:
                    messages.success(request, f"Policy of {merchant} changed.")
                else:
                    messages.warning(
                        request,
                        f"Approval request {submitted.approval.pk} sent: another person must approve it.",
                    )
                return HttpResponseRedirect(reverse("admin:support_merchantpolicy_changelist"))
        return TemplateResponse(
            request,
            "admin/support/merchantpolicy/propose.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"Policy of {merchant}",
                "merchant": merchant,
                "current": current,
                "form": form,
            },
            status=400 if request.method == "POST" else 200,
        )

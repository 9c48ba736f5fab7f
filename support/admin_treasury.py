"""Treasury addresses in the console: listed per merchant (scoped), declared and retired only through their
dangerous actions (a reason, and four-eyes per the merchant's policy). The pages never save a row
themselves: there is no change form, and the add form submits the action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from payments.admin_access import MerchantListFilter, MerchantScopedAdmin, staff_merchants
from payments.errors import GatewayError
from payments.models import Merchant, Network, TreasuryAddress
from payments.services.resolutions import REASON_MIN_CHARACTERS

from .approvals import dangerous_action_submit, four_eyes_required, may_take
from .audit import request_audit_context
from .dangerous_treasury import TREASURY_ADD, TREASURY_RETIRE


class DeclareForm(forms.Form):
    merchant = forms.ModelChoiceField(queryset=Merchant.objects.none())
    network = forms.ModelChoiceField(
        queryset=Network.objects.filter(enabled=True).order_by("code"), to_field_name="code"
    )
    address = forms.CharField(
        max_length=100, widget=forms.TextInput(attrs={"size": 70, "autocomplete": "off"})
    )
    label = forms.CharField(
        max_length=100, required=False, help_text="e.g. 'cold wallet', 'exchange deposit'"
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), min_length=REASON_MIN_CHARACTERS
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["merchant"].queryset = staff_merchants(user).order_by("name", "pk")


class RetireForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), min_length=REASON_MIN_CHARACTERS
    )


@admin.register(TreasuryAddress)
class TreasuryAddressAdmin(MerchantScopedAdmin, admin.ModelAdmin):
    list_display = ("address", "network", "merchant", "label", "created_at", "retired_at", "retire")
    list_filter = (("merchant", MerchantListFilter), "network", ("retired_at", admin.EmptyFieldListFilter))
    search_fields = ("address", "label", "merchant__id", "merchant__name")
    readonly_fields = [f.name for f in TreasuryAddress._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False

    def get_list_display(self, request):
        shown = super().get_list_display(request)
        if request.user.has_perm(TREASURY_RETIRE.permission):
            return shown
        return tuple(name for name in shown if name != "retire")  # no link to a page that would be a 403

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="")
    def retire(self, treasury):
        if treasury.retired_at is not None:
            return ""
        url = reverse("admin:payments_treasuryaddress_retire", args=[treasury.pk])
        return format_html('<a href="{}">Retire…</a>', url)

    def get_urls(self):
        return [
            path(
                "declare/",
                self.admin_site.admin_view(self.declare_view),
                name="payments_treasuryaddress_declare",
            ),
            path(
                "<int:treasury_id>/retire/",
                self.admin_site.admin_view(self.retire_view),
                name="payments_treasuryaddress_retire",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:payments_treasuryaddress_declare"))

    def _page(self, request, title: str, form, explanation: str, four_eyes: bool | None, status: int):
        return TemplateResponse(
            request,
            "admin/support/treasury_form.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": title,
                "form": form,
                "explanation": explanation,
                "four_eyes": four_eyes,
            },
            status=status,
        )

    def _submitted(self, request, submitted, done: str):
        if submitted.applied:
            messages.success(request, done)
        else:
            messages.warning(
                request,
                f"Approval request {submitted.approval.pk} sent: another person must approve it. "
                "Nothing changes until then.",
            )
        return HttpResponseRedirect(reverse("admin:payments_treasuryaddress_changelist"))

    def declare_view(self, request):
        if not request.user.has_perm(TREASURY_ADD.permission):
            raise PermissionDenied
        named = request.POST.get("merchant") if request.method == "POST" else None
        if named and not staff_merchants(request.user).filter(pk=named).exists():
            raise PermissionDenied  # a merchant the user was not offered: refused, not merely invalid
        form = DeclareForm(request.POST if request.method == "POST" else None, user=request.user)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            if not may_take(request.user, TREASURY_ADD, data["merchant"].pk):
                raise PermissionDenied
            payload = {"network": data["network"].code, "address": data["address"], "label": data["label"]}
            try:
                submitted = dangerous_action_submit(
                    actor=request.user,
                    action=TREASURY_ADD.name,
                    merchant=data["merchant"],
                    payload=payload,
                    reason=data["reason"],
                    now=timezone.now(),
                    **request_audit_context(request),
                )
            except GatewayError as exc:
                form.add_error(None, f"{exc.message} ({exc.code})")
            else:
                return self._submitted(
                    request, submitted, f"Treasury address declared for {data['merchant']}."
                )
        explanation = (
            "Outflows from payment addresses to a declared treasury are sweeps (settlements). The address is "
            "checked for the network (EIP-55 for EVM, bech32 with the network's prefix). Unless the merchant's "
            "policy turns configuration four-eyes off, another person approves it first."
        )
        return self._page(
            request, "Declare a treasury address", form, explanation, None, 400 if form.is_bound else 200
        )

    def retire_view(self, request, treasury_id: int):
        treasury = get_object_or_404(self.get_queryset(request), pk=treasury_id, retired_at__isnull=True)
        if not may_take(request.user, TREASURY_RETIRE, treasury.merchant_id):
            raise PermissionDenied
        form = RetireForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                submitted = dangerous_action_submit(
                    actor=request.user,
                    action=TREASURY_RETIRE.name,
                    merchant=treasury.merchant,
                    payload={"treasury": treasury.pk},
                    reason=form.cleaned_data["reason"],
                    now=timezone.now(),
                    **request_audit_context(request),
                )
            except GatewayError as exc:
                form.add_error(None, f"{exc.message} ({exc.code})")
            else:
                return self._submitted(request, submitted, f"Treasury address {treasury.address} retired.")
        explanation = (
            f"Outflows to {treasury.address} on {treasury.network_id} will no longer count as sweeps."
        )
        four_eyes = four_eyes_required(TREASURY_RETIRE, treasury.merchant, None)
        return self._page(
            request, "Retire a treasury address", form, explanation, four_eyes, 400 if form.is_bound else 200
        )

    def changelist_view(self, request, extra_context=None):
        extra = {"may_declare": request.user.has_perm(TREASURY_ADD.permission)}
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def has_add_permission(self, request):
        return request.user.has_perm(TREASURY_ADD.permission)

"""The wallet admin of the console. A new key (or one replacing the merchant's active wallet for its chain
and network) and a reactivation send future payments to a key: each is submitted as a dangerous action
(`wallet.add`, `wallet.reactivate`), so with four-eyes (the default) it waits for another person's
approval and nothing changes until then. Deactivating stays a list action (audited)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from payments.admin import WalletAdmin
from payments.errors import GatewayError
from payments.models import Wallet
from payments.services.resolutions import REASON_MIN_CHARACTERS, reason_check

from .admin_config import AuditedAdminMixin, request_context, reregister
from .approvals import dangerous_action_submit, four_eyes_required
from .dangerous_wallets import (
    WALLET_ADD,
    WALLET_REACTIVATE,
    wallet_add_payload,
)

FOUR_EYES_NOTE = (
    "Future payments go to this key: unless the merchant's policy says otherwise, another person must "
    "approve it first (Support > Approval requests), and nothing changes until then."
)


def _reason_field(note: str = "") -> forms.CharField:
    return forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        min_length=REASON_MIN_CHARACTERS,
        help_text=f"At least a sentence: kept with the request and in the audit log. {note}".strip(),
    )


def _gateway_error(exc: GatewayError) -> forms.ValidationError:
    return forms.ValidationError(f"{exc.message} ({exc.code})", code=exc.code)


class WalletKeyForm(forms.ModelForm):
    """The add form: checked as the dangerous action checks it (`wallet_add_check`, after deactivating
    the wallet it replaces), so it refuses what `add_wallet` refuses, with the same codes."""

    replace = forms.BooleanField(
        required=False,
        label="replace the active wallet",
        help_text="deactivate the merchant's active wallet for this chain and network: future payments "
        "go to the new key",
    )
    reason = _reason_field(FOUR_EYES_NOTE)

    class Meta:
        model = Wallet
        fields = ("merchant", "chain", "network", "account_key")

    def clean_reason(self) -> str:
        try:
            return reason_check(self.cleaned_data["reason"])
        except GatewayError as exc:
            raise _gateway_error(exc) from exc

    def clean(self):
        data = super().clean()
        if set(self.errors) - {"reason"}:  # a missing reason does not hide what is wrong with the key
            return data
        network = data.get("network")
        self.payload = wallet_add_payload(
            merchant=data["merchant"],
            chain=data["chain"],
            network_code=network.code if network else None,
            account_key=data["account_key"],
            replace=data.get("replace", False),
        )
        try:
            WALLET_ADD.check(merchant=data["merchant"], intent=None, payload=self.payload, now=timezone.now())
        except GatewayError as exc:
            if exc.code == "wallet_exists":
                exc.message += "; tick “replace the active wallet” to replace it"
            raise _gateway_error(exc) from exc
        return data


class ReasonForm(forms.Form):
    reason = _reason_field()

    def clean_reason(self) -> str:
        try:
            return reason_check(self.cleaned_data["reason"])
        except GatewayError as exc:
            raise _gateway_error(exc) from exc


class WalletKeyAdmin(AuditedAdminMixin, WalletAdmin):
    audit_skip_actions = ("reactivate",)  # a dangerous action: audited by support.approvals

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:  # payments' WalletAdmin would put its own add form back
            return admin.ModelAdmin.get_form(self, request, obj, **{**kwargs, "form": WalletKeyForm})
        return super().get_form(request, obj, **kwargs)

    def has_change_permission(self, request, obj=None):
        # A wallet's page is a record (its key and index are evidence): nothing on it is saved. Keys change
        # through the add form, deactivate and reactivate, which keep the change permission on the list.
        return False if obj is not None else super().has_change_permission(request)

    def get_fields(self, request, obj=None):
        if obj is None:
            return (*WalletKeyForm.Meta.fields, "replace", "reason")
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        data = form.cleaned_data
        obj.audited = True  # by support.approvals, applied or asked
        try:
            submitted = dangerous_action_submit(
                actor=request.user,
                action=WALLET_ADD.name,
                merchant=data["merchant"],
                payload=form.payload,
                reason=data["reason"],
                now=timezone.now(),
                **request_context(request),
            )
        except GatewayError as exc:  # changed since the form's check
            obj.refused = exc
            return
        if submitted.applied:
            wallet = Wallet.objects.get(pk=submitted.result["wallet"]["wallet"])
            for field in Wallet._meta.concrete_fields:
                setattr(obj, field.attname, getattr(wallet, field.attname))
            obj._state.adding = False
            obj.replaced = (submitted.result["before"]["active_wallet"] or {}).get("wallet")
        else:
            obj.approval = submitted.approval

    def log_addition(self, request, obj, message):
        if obj.pk is not None:
            return super().log_addition(request, obj, message)
        return None

    def response_add(self, request, obj, post_url_continue=None):
        if getattr(obj, "refused", None) is not None:
            exc = obj.refused
            self.message_user(request, f"No wallet added: {exc.message} ({exc.code})", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:payments_wallet_add"))
        if getattr(obj, "approval", None) is not None:
            return self._approval_sent(request, obj.approval)
        if obj.replaced:
            self.message_user(request, f"Wallet {obj.replaced} deactivated: it is replaced.", messages.INFO)
        return super().response_add(request, obj, post_url_continue)

    def _approval_sent(self, request, approval):
        self.message_user(
            request,
            f"Approval request {approval.pk} sent; another person must approve it. Nothing changes until then.",
            messages.WARNING,
        )
        if request.user.has_perm("support.view_approvalrequest"):
            return HttpResponseRedirect(reverse("admin:support_approvalrequest_change", args=[approval.pk]))
        return HttpResponseRedirect(reverse("admin:payments_wallet_changelist"))

    @admin.action(
        description="Reactivate selected wallets (future payments go to their keys again)…",
        permissions=["action"],
    )
    def reactivate(self, request, queryset):
        self.require_action_permission(request, queryset)
        wallets = list(queryset.filter(is_active=False).select_related("merchant", "network").order_by("pk"))
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            for wallet in wallets:
                self._reactivate(request, wallet, form.cleaned_data["reason"])
            return None
        rows = []
        for wallet in wallets:
            payload = {"wallet": wallet.pk}
            try:
                WALLET_REACTIVATE.check(
                    merchant=wallet.merchant, intent=None, payload=payload, now=timezone.now()
                )
            except GatewayError as exc:
                refused = f"{exc.message} ({exc.code})"
            else:
                refused = ""
            four_eyes = four_eyes_required(WALLET_REACTIVATE, wallet.merchant, None)
            rows.append({"wallet": wallet, "refused": refused, "four_eyes": four_eyes})
        return TemplateResponse(
            request,
            "admin/support/wallet/reactivate.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Reactivate wallets",
                "rows": rows,
                "form": form,
            },
        )

    def _reactivate(self, request, wallet: Wallet, reason: str) -> None:
        try:
            submitted = dangerous_action_submit(
                actor=request.user,
                action=WALLET_REACTIVATE.name,
                merchant=wallet.merchant,
                payload={"wallet": wallet.pk},
                reason=reason,
                now=timezone.now(),
                **request_context(request),
            )
        except GatewayError as exc:
            self.message_user(request, f"wallet {wallet.pk}: {exc.message} ({exc.code})", messages.ERROR)
            return
        if submitted.applied:
            self.message_user(request, f"wallet {wallet.pk} reactivated", messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"wallet {wallet.pk}: approval request {submitted.approval.pk} sent; another person must "
                "approve it",
                messages.WARNING,
            )


reregister(Wallet, WalletKeyAdmin)

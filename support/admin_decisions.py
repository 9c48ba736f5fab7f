"""The overpayment decisions in the admin: read-only records a finance person can filter and export
(written only by `support.payment_actions.overpayment_decide`)."""

from __future__ import annotations

from django.contrib import admin

from payments.admin_access import EvidenceAdmin, MerchantScopedAdmin

from .models import OverpaymentDecision
from .payment_page import intent_amount_text


@admin.register(OverpaymentDecision)
class OverpaymentDecisionAdmin(MerchantScopedAdmin, EvidenceAdmin):
    list_display = ("intent", "merchant", "decision", "excess", "actor", "decided_at", "superseded_at")
    list_select_related = ("intent__network_asset__asset", "merchant", "actor")
    list_filter = ("decision", ("superseded_at", admin.EmptyFieldListFilter))
    search_fields = ("intent__id", "merchant__id", "reason")
    readonly_fields = [f.name for f in OverpaymentDecision._meta.fields]

    @admin.display(description="excess")
    def excess(self, obj: OverpaymentDecision) -> str:
        return intent_amount_text(obj.intent, obj.excess_base_units)

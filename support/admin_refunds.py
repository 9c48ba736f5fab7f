"""Refunds and settlements in the console, read-only and scoped to the staff member's merchants: refunds
are made from the payment page (`actions_refunds`) or by the merchant's API, and move by chain evidence;
settlements are derived from outflows. Nothing here saves a row."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.html import format_html

from payments.admin_access import MerchantListFilter, MerchantScopedAdmin
from payments.models import Refund, Settlement, SettlementLeg
from payments.selectors_refunds import refund_payment_uri

from .payment_page import amount_text


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _payment_link(intent_id: str | None) -> str:
    if not intent_id:
        return "-"
    url = reverse("admin:payments_paymentintent_change", args=[quote(intent_id)])
    return format_html('<a href="{}">{}</a>', url, intent_id)


@admin.register(Refund)
class RefundAdmin(MerchantScopedAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "state",
        "amount",
        "payment",
        "merchant",
        "destination_text",
        "created_at",
        "expires_at",
    )
    list_filter = ("state", ("merchant", MerchantListFilter), "amount_kind")
    search_fields = ("id", "intent__id", "destination", "merchant__name", "intent__merchant_order_id")
    list_select_related = ("network_asset__asset", "merchant")
    readonly_fields = (
        "id",
        "state",
        "amount",
        "payment",
        "merchant",
        "amount_kind",
        "reason",
        "destination",
        "destination_set_by",
        "pay_with",
        "requested_by",
        "approved_by",
        "canceled_by",
        "failure_reason",
        "observation",
        "expires_at",
        "created_at",
        "updated_at",
    )
    fields = readonly_fields

    @admin.display(description="amount")
    def amount(self, refund: Refund) -> str:
        na = refund.network_asset
        return amount_text(refund.amount_base_units, na.decimals, na.asset.code)

    @admin.display(description="payment")
    def payment(self, refund: Refund) -> str:
        return _payment_link(refund.intent_id)

    @admin.display(description="destination")
    def destination_text(self, refund: Refund) -> str:
        return refund.destination or "(waiting for the customer)"

    @admin.display(description="the merchant's wallet pays")
    def pay_with(self, refund: Refund) -> str:
        return refund_payment_uri(refund) or "-"


class LegInline(admin.TabularInline):
    model = SettlementLeg
    extra = 0
    can_delete = False
    fields = ("position", "payment", "amount", "fee", "fiat_value", "fiat_currency", "rate", "rate_source")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="payment")
    def payment(self, leg: SettlementLeg) -> str:
        return _payment_link(leg.intent_id)

    @admin.display(description="moved")
    def amount(self, leg: SettlementLeg) -> str:
        na = leg.network_asset
        return (
            amount_text(leg.amount_base_units, na.decimals, na.asset.code)
            if na
            else str(leg.amount_base_units)
        )

    @admin.display(description="fee share")
    def fee(self, leg: SettlementLeg) -> str:
        fee_asset = leg.settlement.fee_asset
        if leg.fee_base_units is None or fee_asset is None:
            return "-"
        return amount_text(leg.fee_base_units, fee_asset.decimals, fee_asset.asset.code)


@admin.register(Settlement)
class SettlementAdmin(MerchantScopedAdmin, ReadOnlyAdmin):
    list_display = ("id", "kind", "canonical", "network", "tx_hash", "merchant", "fee", "seen_at")
    list_filter = ("kind", "canonical", ("merchant", MerchantListFilter), "network")
    search_fields = ("id", "transaction__tx_hash", "legs__intent__id", "merchant__name")
    list_select_related = ("transaction", "network", "merchant", "fee_asset__asset")
    readonly_fields = (
        "id",
        "kind",
        "canonical",
        "merchant",
        "network",
        "tx_hash",
        "fee",
        "destinations",
        "seen_at",
    )
    fields = readonly_fields
    inlines = [LegInline]

    @admin.display(description="transaction")
    def tx_hash(self, settlement: Settlement) -> str:
        url = settlement.network.explorer_url(settlement.transaction.tx_hash)
        if url:
            return format_html(
                '<a href="{}" rel="noreferrer noopener" target="_blank">{}</a>',
                url,
                settlement.transaction.tx_hash,
            )
        return settlement.transaction.tx_hash

    @admin.display(description="network fee")
    def fee(self, settlement: Settlement) -> str:
        if settlement.fee_base_units is None or settlement.fee_asset is None:
            return "-"
        return amount_text(
            settlement.fee_base_units, settlement.fee_asset.decimals, settlement.fee_asset.asset.code
        )

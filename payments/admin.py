"""Admin for reference data and a read-only view of payments and their evidence. Support queues and
dangerous actions belong to the `support` app."""

from django import forms
from django.contrib import admin

from .chains.redaction import redact_url
from .models import (
    ApiKey,
    Asset,
    ChainObservation,
    ChainTip,
    ConfirmationRule,
    Merchant,
    Network,
    NetworkAsset,
    PaymentIntent,
    Resolution,
    StateTransition,
    Wallet,
)


class NetworkAssetInline(admin.TabularInline):
    model = NetworkAsset
    extra = 0


class NetworkAdminForm(forms.ModelForm):
    """`rpc_url` is write-only: the form never echoes the stored URL (it may hold a password or an API key);
    left blank it keeps the stored one, and `rpc_url_clear` empties it (the network is then not scanned)."""

    rpc_url = forms.CharField(
        label="node URL",
        required=False,
        max_length=Network._meta.get_field("rpc_url").max_length,
        widget=forms.TextInput(attrs={"autocomplete": "off", "size": 60}),
        help_text=Network._meta.get_field("rpc_url").help_text
        + ". Never shown again once saved; on a saved network, leave blank to keep the current one.",
    )
    rpc_url_clear = forms.BooleanField(
        label="remove the node URL", required=False, help_text="stop scanning this network"
    )

    # No Meta: the admin builds the form for every model field (the declared ones above replace theirs).

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["rpc_url"] = ""

    def clean_rpc_url(self) -> str:
        url = self.cleaned_data["rpc_url"].strip()
        return url or self.instance.rpc_url

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("rpc_url_clear"):
            cleaned["rpc_url"] = ""
        return cleaned


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    form = NetworkAdminForm
    list_display = (
        "code",
        "name",
        "chain",
        "chain_id",
        "bech32_hrp",
        "is_testnet",
        "enabled",
        "node",
        "scanned_to",
        "tip_height",
        "scan_lag",
        "scan_errors",
        "last_scan_error",
    )
    list_filter = ("chain", "is_testnet", "enabled")
    readonly_fields = ("node", "scan_errors", "last_scan_error")
    inlines = [NetworkAssetInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("scan_cursor", "tip", "scan_status")

    def get_fields(self, request, obj=None):
        # Whoever cannot change the network sees the URL redacted, never the form field (whose read-only
        # display would be the stored value).
        fields = [f for f in super().get_fields(request, obj) if f not in ("rpc_url", "rpc_url_clear")]
        if self.has_change_permission(request, obj) or (obj is None and self.has_add_permission(request)):
            position = fields.index("node")
            fields[position:position] = ["rpc_url"] if obj is None else ["rpc_url", "rpc_url_clear"]
        return fields

    @admin.display(description="node")
    def node(self, network):
        return redact_url(network.rpc_url) or "-"

    @admin.display(description="scanned to")
    def scanned_to(self, network):
        cursor = getattr(network, "scan_cursor", None)
        return cursor.height if cursor else None

    @admin.display(description="tip")
    def tip_height(self, network):
        tip = getattr(network, "tip", None)
        return tip.height if tip else None

    @admin.display(description="lag (blocks)")
    def scan_lag(self, network):
        cursor, tip = getattr(network, "scan_cursor", None), getattr(network, "tip", None)
        return tip.height - cursor.height if cursor and tip else None

    @admin.display(description="scan errors (in a row / all)")
    def scan_errors(self, network):
        status = getattr(network, "scan_status", None)
        return f"{status.errors_in_a_row} / {status.errors_total}" if status else "0 / 0"

    @admin.display(description="last scan error")
    def last_scan_error(self, network):
        status = getattr(network, "scan_status", None)
        if not status or not status.last_error_at:
            return "-"
        return f"{status.last_error_at:%Y-%m-%d %H:%M:%S} UTC: {status.last_error[:200]}"


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "peg_currency")


@admin.register(NetworkAsset)
class NetworkAssetAdmin(admin.ModelAdmin):
    list_display = ("asset", "network", "contract_address", "decimals", "default_confirmations", "enabled")
    list_filter = ("network", "asset", "enabled")


class ConfirmationRuleInline(admin.TabularInline):
    model = ConfirmationRule
    extra = 0


class WalletInline(admin.TabularInline):
    model = Wallet
    extra = 0
    fields = ("chain", "network", "account_key", "next_index", "is_active")
    readonly_fields = ("account_key", "next_index")
    verbose_name = "wallet (next_index = highest derived index + 1; mind the gap limit)"


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "is_active", "created_at")
    inlines = [ConfirmationRuleInline, WalletInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "merchant", "name", "scopes", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "digest", "created_at", "last_used_at")


class TransitionInline(admin.TabularInline):
    model = StateTransition
    extra = 0
    can_delete = False
    readonly_fields = ("from_state", "to_state", "reason", "created_at", "cause")
    fields = readonly_fields


class ObservationInline(admin.TabularInline):
    model = ChainObservation
    extra = 0
    can_delete = False
    fields = ("network", "tx_hash", "output_index", "amount_base_units", "block_height", "canonical")
    readonly_fields = fields


@admin.register(PaymentIntent)
class PaymentIntentAdmin(admin.ModelAdmin):
    list_display = ("id", "merchant", "state", "merchant_order_id", "network_asset", "created_at")
    list_filter = ("state", "network_asset")
    search_fields = ("id", "merchant_order_id", "address__address")
    readonly_fields = [f.name for f in PaymentIntent._meta.fields]
    inlines = [ObservationInline, TransitionInline]

    def has_add_permission(self, request):
        return False


class EvidenceAdmin(admin.ModelAdmin):
    """Evidence and its consequences are append-only: viewable, never edited here (also the outbox and
    the webhook delivery log)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


for model in (ChainObservation, ChainTip, Resolution, StateTransition):
    admin.site.register(model, EvidenceAdmin)

from .webhooks import admin as webhooks_admin  # noqa: E402, F401 (registers the webhook admin, Event included)

"""Admin for reference data and a read-only view of payments and their evidence. Support queues and
dangerous actions belong to the `support` app."""

from django import forms
from django.contrib import admin, messages
from django.core.validators import MaxValueValidator, MinValueValidator
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from . import accounts, policy
from .accounts import MAX_CONFIRMATIONS, api_key_create, api_key_revoke, confirmation_rule_set
from .admin_access import ActionPermissionMixin, EvidenceAdmin, MerchantListFilter, MerchantScopedAdmin
from .admin_filters import (
    DateRangeFilter,
    FulfilmentFilter,
    InFlightFilter,
    PaidTimeRangeFilter,
    ReplacedOrDroppedFilter,
    UnderpaidWindowFilter,
)
from .chains.redaction import redact_url
from .errors import GatewayError
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
from .pricing import format_amount, to_base_units
from .webhooks import admin as webhooks_admin  # noqa: F401 (registers the webhook admin, Event included)


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

    def lookup_allowed(self, lookup, value, request=None):
        # The stock admin allows any lookup on a model's own fields in the list URL:
        # ?rpc_url__startswith=... would tell anyone who may view networks the URL a character at a time.
        if lookup.split("__", 1)[0] in ("rpc_url", "rpc_url_clear"):
            return False
        return super().lookup_allowed(lookup, value, request)

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


class ConfirmationRuleForm(forms.ModelForm):
    """A confirmation tier with its minimum amount in the asset's units (not base units)."""

    min_amount = forms.DecimalField(
        min_value=0,
        initial=0,
        label="from amount due (asset units)",
        help_text="the tier applies to amounts due from this amount upward; 0: every amount",
    )

    class Meta:
        model = ConfirmationRule
        fields = ("network_asset", "min_amount", "confirmations")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["network_asset"].queryset = NetworkAsset.objects.select_related("asset", "network")
        confirmations = self.fields["confirmations"]
        confirmations.widget.attrs.update(min=1, max=MAX_CONFIRMATIONS)
        confirmations.validators += [MinValueValidator(1), MaxValueValidator(MAX_CONFIRMATIONS)]
        if self.instance.pk:
            self.initial["min_amount"] = format_amount(
                int(self.instance.min_amount_base_units), self.instance.network_asset.decimals
            )

    def clean(self):
        cleaned = super().clean()
        network_asset, amount = cleaned.get("network_asset"), cleaned.get("min_amount")
        if network_asset is not None and amount is not None:
            try:
                base_units = to_base_units(amount, network_asset.decimals)
                if base_units >= 10**78:  # the column is NUMERIC(78, 0)
                    self.add_error("min_amount", "too large an amount")
                self.instance.min_amount_base_units = base_units
            except ValueError:
                self.add_error(
                    "min_amount", f"{network_asset.asset.code} has {network_asset.decimals} decimals"
                )
        return cleaned


class ConfirmationRuleFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        seen: set[tuple[int, int]] = set()
        for form in self.forms:
            if (not form.has_changed() and not form.instance.pk) or (
                self.can_delete and self._should_delete_form(form)
            ):
                continue
            network_asset = form.cleaned_data.get("network_asset")
            if network_asset is None or form.errors:
                continue
            tier = (network_asset.pk, int(form.instance.min_amount_base_units))
            if tier in seen:
                raise forms.ValidationError(
                    f"two tiers for {network_asset} from the same amount: keep one", code="duplicate_tier"
                )
            seen.add(tier)


class ConfirmationRuleInline(admin.TabularInline):
    model = ConfirmationRule
    form = ConfirmationRuleForm
    formset = ConfirmationRuleFormSet
    extra = 0

    @admin.display(description="from amount due (asset units)")
    def min_amount(self, rule):
        """What staff who may only view see (the form field shows it to those who may change)."""
        return format_amount(int(rule.min_amount_base_units), rule.network_asset.decimals)


class WalletInline(admin.TabularInline):
    """Shown with its merchant; added, deactivated and reactivated in the wallet admin (through the
    services, which refuse a key another active wallet uses)."""

    model = Wallet
    extra = 0
    fields = ("chain", "network", "account_key", "next_index", "is_active")
    readonly_fields = fields
    can_delete = False
    verbose_name = "wallet (next_index = highest derived index + 1; mind the gap limit)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class WalletAddForm(forms.ModelForm):
    """The add form checks through `wallet_add_check`, so it refuses what `add_wallet` refuses, with the
    same codes; the admin's save then goes through `wallet_add` in the same transaction."""

    class Meta:
        model = Wallet
        fields = ("merchant", "chain", "network", "account_key")

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            accounts.wallet_add_check(**_wallet_add_arguments(data))
        except GatewayError as exc:
            raise forms.ValidationError(f"{exc.message} ({exc.code})", code=exc.code) from exc
        return data


def _wallet_add_arguments(data) -> dict:
    network = data.get("network")
    return {
        "merchant": data["merchant"],
        "chain": data["chain"],
        "account_key": data["account_key"],
        "network_code": network.code if network else None,
    }


@admin.register(Wallet)
class WalletAdmin(ActionPermissionMixin, admin.ModelAdmin):
    """Wallets are added through the service and never edited or deleted (their addresses are evidence):
    deactivate one to stop deriving from it."""

    list_display = ("id", "merchant", "chain", "network", "next_index", "is_active", "created_at")
    list_filter = (("merchant", MerchantListFilter), "chain", "network", "is_active")
    search_fields = ("merchant__id", "merchant__name", "account_key")
    actions = ("deactivate", "reactivate")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = WalletAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return WalletAddForm.Meta.fields
        return ("merchant", "chain", "network", "account_key", "next_index", "is_active", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.get_fields(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return
        wallet = accounts.wallet_add(**_wallet_add_arguments(form.cleaned_data))
        for field in Wallet._meta.concrete_fields:
            setattr(obj, field.attname, getattr(wallet, field.attname))
        obj._state.adding = False

    @admin.action(description="Deactivate selected wallets", permissions=["action"])
    def deactivate(self, request, queryset):
        self.require_action_permission(request, queryset)
        for wallet in queryset.filter(is_active=True):
            accounts.wallet_deactivate(wallet=wallet)
            self.message_user(request, f"wallet {wallet.pk} deactivated", messages.SUCCESS)

    @admin.action(description="Reactivate selected wallets", permissions=["action"])
    def reactivate(self, request, queryset):
        self.require_action_permission(request, queryset)
        for wallet in queryset.filter(is_active=False):
            try:
                accounts.wallet_reactivate(wallet=wallet)
            except GatewayError as exc:
                self.message_user(request, f"wallet {wallet.pk}: {exc.message} ({exc.code})", messages.ERROR)
            else:
                self.message_user(request, f"wallet {wallet.pk} reactivated", messages.SUCCESS)


@admin.register(Merchant)
class MerchantAdmin(MerchantScopedAdmin, admin.ModelAdmin):
    list_display = ("id", "name", "is_active", "created_at")
    merchant_path = "pk"
    inlines = [ConfirmationRuleInline, WalletInline]

    def save_formset(self, request, form, formset, change):
        if formset.model is not ConfirmationRule:
            return super().save_formset(request, form, formset, change)
        # Tiers are written by the service, like every other path that sets them.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for deleted in formset.deleted_forms:
            if deleted.instance.pk:
                formset.deleted_objects.append(deleted.instance)
                deleted.instance.delete()
        for rule_form in formset.forms:
            if rule_form in formset.deleted_forms or not rule_form.has_changed():
                continue
            old = rule_form.instance
            if old.pk and {"min_amount", "network_asset"} & set(rule_form.changed_data):
                ConfirmationRule.objects.filter(pk=old.pk).delete()
            rule = confirmation_rule_set(
                merchant=form.instance,
                network_asset=rule_form.cleaned_data["network_asset"],
                confirmations=rule_form.cleaned_data["confirmations"],
                min_amount_base_units=int(old.min_amount_base_units),
            )
            if old.pk:
                formset.changed_objects.append((rule, rule_form.changed_data))
            else:
                formset.new_objects.append(rule)


class ApiKeyAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in ApiKey.SCOPES], widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("merchant", "name", "scopes")
        labels = {"name": "label"}


@admin.register(ApiKey)
class ApiKeyAdmin(ActionPermissionMixin, admin.ModelAdmin):
    """Keys are made by `api_key_create`, whose secret the page after the add form shows once (it is
    never stored), and revoked by `api_key_revoke` (the list's action, with the change permission).
    Nothing else about a key changes here, and keys are revoked, never deleted."""

    list_display = ("prefix", "merchant", "name", "scopes", "created_at", "last_used_at", "revoked_at")
    list_filter = (("merchant", MerchantListFilter), ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "merchant__id", "merchant__name")
    fields = ("merchant", "name", "scopes", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ApiKeyAddForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        key, secret = api_key_create(
            merchant=form.cleaned_data["merchant"],
            scopes=form.cleaned_data["scopes"],
            name=form.cleaned_data["name"],
        )
        for model_field in ApiKey._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(key, model_field.attname))
        obj._state.adding, obj._state.db = False, key._state.db
        obj.secret_shown_once = secret  # not a field: lives until the response below is rendered

    def response_add(self, request, obj, post_url_continue=None):
        response = TemplateResponse(
            request,
            "admin/payments/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "API key created",
                "key": obj,
                "secret": obj.secret_shown_once,
            },
        )
        add_never_cache_headers(response)
        return response

    @admin.action(
        description="Revoke (the key stops working within seconds: GATEWAY_API_KEY_CACHE_S)",
        permissions=("action",),
    )
    def revoke(self, request, queryset):
        self.require_action_permission(request, queryset)
        now = timezone.now()
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=key, now=now)
            self.message_user(request, f"{key.prefix}… revoked", messages.SUCCESS)


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


class FlagListFilter(admin.SimpleListFilter):
    """Payments flagged for review (late, duplicate, wrong asset, wrong network): one flag at a time."""

    title = "flag"
    parameter_name = "flag"

    def lookups(self, request, model_admin):
        return [(flag, flag.replace("_", " ")) for flag in sorted(set(policy.EXCEPTION_KINDS.values()))]

    def queryset(self, request, queryset):
        if self.value() in dict(self.lookup_choices):
            return queryset.filter(flags__contains=[self.value()])
        return queryset


@admin.register(PaymentIntent)
class PaymentIntentAdmin(MerchantScopedAdmin, admin.ModelAdmin):
    list_display = (
        "id",
        "merchant",
        "state",
        "flags",
        "merchant_order_id",
        "network_asset",
        "created_at",
        "fulfilled_at",
    )
    list_filter = (
        ("merchant", MerchantListFilter),
        "state",
        FlagListFilter,
        InFlightFilter,
        UnderpaidWindowFilter,
        ReplacedOrDroppedFilter,
        FulfilmentFilter,
        "network_asset",
        ("created_at", DateRangeFilter),
        PaidTimeRangeFilter,
    )
    search_fields = ("id", "merchant_order_id", "address__address")
    readonly_fields = [f.name for f in PaymentIntent._meta.fields]
    inlines = [ObservationInline, TransitionInline]

    def has_add_permission(self, request):
        return False


class IntentEvidenceAdmin(MerchantScopedAdmin, EvidenceAdmin):
    """Evidence of one payment: seen by who may see the payment's merchant (an observation matched to no
    payment by superusers only)."""

    merchant_path = "intent__merchant"


admin.site.register(ChainTip, EvidenceAdmin)  # a network's, not a merchant's
for model in (ChainObservation, Resolution, StateTransition):
    admin.site.register(model, IntentEvidenceAdmin)

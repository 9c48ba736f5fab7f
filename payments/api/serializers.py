"""Request parsing for the merchant API. Shapes and sizes here; business rules in services."""

from __future__ import annotations

import ipaddress
import json
import re
import threading
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from payments.models import PaymentState

# Digits, optionally a dot and more digits: no sign, no exponent, no NaN/Infinity, no spaces.
_AMOUNT = re.compile(r"[0-9]{1,40}(\.[0-9]{1,40})?")  # matched in full (fullmatch): no trailing newline
METADATA_MAX_KEYS = 50
METADATA_MAX_BYTES = 16 * 1024
METADATA_KEY_MAX = 40


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^[0-9]{1,40}(\.[0-9]{1,40})?$",
        "example": "49.00",
        "description": "a positive decimal as a string: digits, optionally a dot and decimals",
    }
)
class AmountField(serializers.Field):
    """A positive decimal given as a string ("49.00"): never a JSON number, which may be a float."""

    default_error_messages = {
        "invalid_amount": 'amount must be a decimal string like "49.00" (no sign, exponent or NaN)',
        "amount_not_positive": "amount must be greater than zero",
        "amount_too_large": "amount has more than 22 digits before the decimal point",
        "amount_too_precise": "amount has more than 18 decimals",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str) or not _AMOUNT.fullmatch(data):
            self.fail("invalid_amount")
        try:
            value = Decimal(data)
        except InvalidOperation:
            self.fail("invalid_amount")
        if value <= 0:
            self.fail("amount_not_positive")
        whole, _, fraction = data.partition(".")
        if len(whole.lstrip("0")) > 22:  # the price column is NUMERIC(40, 18)
            self.fail("amount_too_large")
        if len(fraction.rstrip("0")) > 18:
            self.fail("amount_too_precise")
        return value

    def to_representation(self, value):
        return f"{value:f}"


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class ReturnUrlField(serializers.URLField):
    """Where the checkout sends the customer back: https only; plain http only to this machine (a
    loopback host), and only when the operator allows it (`GATEWAY_RETURN_URL_ALLOW_HTTP`, the demo)."""

    default_error_messages = {
        "insecure_return_url": "must be an https URL (http only for localhost when the operator allows it)",
    }

    def __init__(self, **kwargs):
        super().__init__(max_length=2000, required=False, allow_blank=True, default="", **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        self.run_validators(value)  # not a URL at all (javascript:...) is `invalid_parameter` first
        parts = urlsplit(value)
        if parts.scheme == "https":
            return value
        if parts.scheme == "http" and settings.GATEWAY_RETURN_URL_ALLOW_HTTP and _loopback(parts.hostname):
            return value
        self.fail("insecure_return_url")


class StrictSerializer(serializers.Serializer):
    """Refuses parameters it does not know (a typo should not be silently ignored)."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        serializers.ErrorDetail("the body must be a JSON object", code="invalid_body")
                    ]
                }
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {
                    unknown[0]: [
                        serializers.ErrorDetail(f"unknown parameter {unknown[0]!r}", code="unknown_parameter")
                    ]
                }
            )
        return super().to_internal_value(data)


def validate_metadata(value):
    if not isinstance(value, dict):
        raise serializers.ValidationError("metadata must be a JSON object", code="invalid_metadata")
    if len(value) > METADATA_MAX_KEYS:
        raise serializers.ValidationError(
            f"metadata may have at most {METADATA_MAX_KEYS} keys", code="metadata_too_many_keys"
        )
    for key in value:
        if len(key) > METADATA_KEY_MAX:
            raise serializers.ValidationError(
                f"metadata keys have at most {METADATA_KEY_MAX} characters", code="invalid_metadata"
            )
    if len(json.dumps(value, ensure_ascii=False).encode()) > METADATA_MAX_BYTES:
        raise serializers.ValidationError(
            f"metadata may be at most {METADATA_MAX_BYTES} bytes as JSON", code="metadata_too_large"
        )
    return value


_built = threading.local()


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """What `serializer_class(data=data)` validates to, or its ValidationError (the same details and codes
    as `is_valid(raise_exception=True)`), from a serializer built once per class and thread: building one
    deep-copies every declared field, two thirds of the cost for the create body; validating keeps no
    state in the serializer or its fields."""
    serializers_built = _built.__dict__.setdefault("by_class", {})
    serializer = serializers_built.get(serializer_class)
    if serializer is None:
        serializer = serializers_built[serializer_class] = serializer_class()
    try:
        return serializer.run_validation(data)
    except serializers.ValidationError as exc:
        if isinstance(exc.detail, list) and [getattr(d, "code", None) for d in exc.detail] == ["null"]:
            # a JSON `null` body, described as `is_valid` describes it
            detail = serializers.ErrorDetail("No data provided", code="null")
            raise serializers.ValidationError({"non_field_errors": [detail]}) from None
        raise


class PaymentIntentCreateSerializer(StrictSerializer):
    amount = AmountField(help_text='price as a decimal string, e.g. "49.00"')
    currency = serializers.CharField(max_length=12, help_text="USD, EUR ... or an asset code (BTC, USDC ...)")
    asset = serializers.CharField(max_length=12, required=False, help_text="chosen now, or later on checkout")
    network = serializers.CharField(max_length=40, required=False)
    merchant_order_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    customer_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    expires_in_minutes = serializers.IntegerField(required=False, min_value=1, max_value=7 * 24 * 60)
    success_url = ReturnUrlField(help_text="https URL the checkout returns to once paid")
    cancel_url = ReturnUrlField(help_text="https URL the checkout returns to when the customer gives up")
    metadata = serializers.JSONField(required=False, default=dict, validators=[validate_metadata])

    def validate_currency(self, value: str) -> str:
        return value.strip().upper()

    def validate(self, attrs):
        if ("asset" in attrs) != ("network" in attrs):
            missing = "network" if "asset" in attrs else "asset"
            raise serializers.ValidationError(
                {
                    missing: [
                        serializers.ErrorDetail("asset and network go together", code="parameter_missing")
                    ]
                }
            )
        if "asset" in attrs:
            attrs["asset"] = attrs["asset"].strip().upper()
        return attrs


class SelectAssetSerializer(StrictSerializer):
    asset = serializers.CharField(max_length=12)
    network = serializers.CharField(max_length=40)

    def validate_asset(self, value: str) -> str:
        return value.strip().upper()


class FulfilmentSerializer(StrictSerializer):
    reference = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default="", help_text="your shipment or delivery id"
    )


class PaymentIntentListQuery(serializers.Serializer):
    state = serializers.MultipleChoiceField(choices=PaymentState.values, required=False)
    merchant_order_id = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="exact match (empty: intents without one)"
    )
    customer_id = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="exact match (empty: intents without one)"
    )
    created_gte = serializers.DateTimeField(required=False)
    created_lt = serializers.DateTimeField(required=False)


class MoneySerializer(serializers.Serializer):
    value = serializers.CharField(help_text="decimal string in whole units of the asset")
    base_units = serializers.CharField(help_text="integer string in base units (satoshi, wei ...)")


class PaymentIntentSerializer(serializers.Serializer):
    """The intent as returned by every endpoint (documentation of `selectors.intent_representation`)."""

    id = serializers.CharField()
    object = serializers.CharField()
    state = serializers.ChoiceField(choices=PaymentState.values)
    merchant_order_id = serializers.CharField()
    customer_id = serializers.CharField()
    price = serializers.DictField()
    asset = serializers.CharField(allow_null=True)
    network = serializers.CharField(allow_null=True)
    token_contract = serializers.CharField(allow_null=True)
    address = serializers.CharField(allow_null=True)
    amount_due = MoneySerializer(allow_null=True)
    amount_seen = MoneySerializer(allow_null=True)
    amount_confirmed = MoneySerializer(allow_null=True)
    amount_refunded = MoneySerializer(
        allow_null=True, help_text="what confirmed refunds paid back (a partial refund keeps the state)"
    )
    required_confirmations = serializers.IntegerField(allow_null=True)
    quote = serializers.DictField(allow_null=True)
    expires_at = serializers.DateTimeField()
    payment_deadline = serializers.DateTimeField(
        help_text="when funds stop counting as on time: `expires_at`, moved later when support asked for "
        "a top-up of an underpaid payment, or earlier when the payment was canceled"
    )
    canceled_at = serializers.DateTimeField(allow_null=True)
    fulfilled_at = serializers.DateTimeField(allow_null=True, help_text="when you reported it fulfilled")
    fulfilment_reference = serializers.CharField(allow_null=True)
    checkout_url = serializers.URLField()
    payment_uri = serializers.CharField(allow_null=True, help_text="BIP21 or EIP-681, for the amount due")
    amount_remaining = MoneySerializer(
        allow_null=True, help_text="underpaid: the amount due minus the funds counted; otherwise null"
    )
    payment_uri_remaining = serializers.CharField(
        allow_null=True, help_text="underpaid: BIP21 or EIP-681 for `amount_remaining`; otherwise null"
    )
    success_url = serializers.URLField(allow_null=True)
    cancel_url = serializers.URLField(allow_null=True)
    metadata = serializers.DictField()
    flags = serializers.ListField(child=serializers.CharField())
    transactions = serializers.ListField(
        child=serializers.DictField(),
        help_text="outputs/transfers seen to the address, of any asset: network, tx_hash, output_index, "
        "kind (output, token_transfer, native: output_index -1), asset (null: unknown token), "
        "token_contract, amount (value null when the asset is unknown), decimals, block_height, "
        "confirmations, canonical, first_seen_at",
    )
    sequence = serializers.IntegerField(help_text="sequence number of the latest event of this payment")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable, machine-readable: branch on it")
    message = serializers.CharField(help_text="for people; may change")
    param = serializers.CharField(allow_null=True, help_text="the parameter at fault, dotted; or null")


class ErrorSerializer(serializers.Serializer):
    """Every error answer of the API, whatever its status."""

    error = ErrorDetailSerializer()


def list_of(
    name: str, item: type[serializers.Serializer], **extra: serializers.Field
) -> serializers.Serializer:
    """The documented shape of a list answer: {"object": "list", "data": [...], ...paging fields}."""
    return inline_serializer(
        name,
        {
            "object": serializers.ChoiceField(choices=["list"]),
            "data": item(many=True),
            **extra,
        },
    )


def next_link() -> serializers.Field:
    return serializers.URLField(allow_null=True, help_text="the next page's URL; null on the last page")


# --- webhooks ----------------------------------------------------------------------------------------------


def validate_event_types(value):
    from payments.webhooks.events import EVENT_TYPES

    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise serializers.ValidationError(
            f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}", code="unknown_event_type"
        )
    return value


class WebhookEndpointCreateSerializer(StrictSerializer):
    url = serializers.CharField(max_length=2000, help_text="https, resolving to public addresses")
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=60),
        required=False,
        default=list,
        max_length=50,
        validators=[validate_event_types],
        help_text="the event types to send; empty or absent: every type",
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class WebhookEndpointUpdateSerializer(StrictSerializer):
    url = serializers.CharField(max_length=2000, required=False)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=60),
        required=False,
        max_length=50,
        validators=[validate_event_types],
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)


class RotateSecretSerializer(StrictSerializer):
    overlap_hours = serializers.IntegerField(
        min_value=0, max_value=168, required=False, default=24, help_text="both secrets sign until then"
    )


class ReplaySerializer(StrictSerializer):
    since = serializers.DateTimeField(help_text="events created at or after this time")
    until = serializers.DateTimeField(help_text="and before this time")


class RedeliverSerializer(StrictSerializer):
    endpoint_id = serializers.CharField(
        max_length=40, required=False, help_text="one endpoint; absent: every subscribed endpoint"
    )


class WebhookEndpointSerializer(serializers.Serializer):
    """An endpoint (documentation of `webhooks.events.endpoint_representation`)."""

    id = serializers.CharField()
    object = serializers.CharField()
    url = serializers.CharField()
    description = serializers.CharField()
    event_types = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField(allow_null=True, help_text="merchant, operator, gone, failing")
    disabled_at = serializers.DateTimeField(allow_null=True)
    failing_since = serializers.DateTimeField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    secret = serializers.CharField(required=False, help_text="whsec_...; only when created or rotated")


class EventSerializer(serializers.Serializer):
    """An event: the webhook body and an item of `GET /events`."""

    id = serializers.CharField(help_text="also the webhook-id header: de-duplicate on it")
    object = serializers.CharField()
    type = serializers.CharField()
    created_at = serializers.DateTimeField()
    data = PaymentIntentSerializer(help_text="the payment at that moment; `sequence` orders its events")


class WebhookDeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    object = serializers.CharField()
    event_id = serializers.CharField()
    endpoint_id = serializers.CharField()
    kind = serializers.CharField(help_text="original or replay")
    state = serializers.CharField(help_text="pending, delivered, failed, paused")
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_status_code = serializers.IntegerField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    attempt_log = serializers.ListField(child=serializers.DictField())

"""Request parsing and response documentation for refunds and settlements (shapes; rules in services)."""

from __future__ import annotations

from rest_framework import serializers

from payments.models import Refund, Settlement

from .serializers import AmountField, MoneySerializer, StrictSerializer


class RefundAmountSerializer(StrictSerializer):
    kind = serializers.ChoiceField(
        choices=Refund.AmountKind.choices,
        help_text="received: everything received not yet refunded; excess: what was paid beyond the amount "
        "due; fiat: `value` in `currency` at today's rate; custom: `value` in the asset's units",
    )
    value = AmountField(required=False, help_text="fiat and custom: the amount, a decimal string")
    currency = serializers.CharField(max_length=3, required=False, help_text="fiat: USD, EUR, GBP, CHF, JPY")

    def validate(self, attrs):
        kind = attrs["kind"]
        if kind in (Refund.AmountKind.FIAT, Refund.AmountKind.CUSTOM) and "value" not in attrs:
            raise serializers.ValidationError(
                {
                    "value": [
                        serializers.ErrorDetail(f"a {kind} refund names its value", code="parameter_missing")
                    ]
                }
            )
        if kind == Refund.AmountKind.FIAT and "currency" not in attrs:
            raise serializers.ValidationError(
                {
                    "currency": [
                        serializers.ErrorDetail("a fiat refund names its currency", code="parameter_missing")
                    ]
                }
            )
        if kind not in (Refund.AmountKind.FIAT, Refund.AmountKind.CUSTOM) and "value" in attrs:
            raise serializers.ValidationError(
                {
                    "value": [
                        serializers.ErrorDetail(f"a {kind} refund has no value", code="unexpected_parameter")
                    ]
                }
            )
        return attrs


class RefundCreateSerializer(StrictSerializer):
    payment_intent = serializers.CharField(max_length=40, help_text="the payment to refund")
    amount = RefundAmountSerializer()
    reason = serializers.CharField(max_length=4000, help_text="why (kept with the refund, shown to support)")
    destination = serializers.CharField(
        max_length=100,
        required=False,
        help_text="the customer's address, if you have it; otherwise send the customer `destination_url`",
    )


class RefundListQuery(serializers.Serializer):
    payment_intent = serializers.CharField(max_length=40, required=False)
    state = serializers.ChoiceField(choices=Refund.State.choices, required=False)


class RefundSerializer(serializers.Serializer):
    """A refund as every endpoint and refund event returns it (`selectors_refunds.refund_representation`)."""

    id = serializers.CharField()
    object = serializers.CharField()
    payment_intent = serializers.CharField()
    state = serializers.ChoiceField(choices=Refund.State.choices)
    asset = serializers.CharField()
    network = serializers.CharField()
    amount = MoneySerializer()
    amount_kind = serializers.ChoiceField(choices=Refund.AmountKind.choices)
    fiat = serializers.DictField(
        allow_null=True, help_text="fiat refunds: amount, currency, rate, rate_source"
    )
    reason = serializers.CharField()
    destination = serializers.CharField(allow_null=True)
    destination_url = serializers.CharField(
        allow_null=True,
        help_text="while no destination is set: the page (relative to the gateway) where the customer "
        "enters it; signed, valid until `expires_at`",
    )
    payment_uri = serializers.CharField(
        allow_null=True, help_text="once the destination is set: BIP21 / EIP-681 for your wallet to pay"
    )
    payment_qr_url = serializers.CharField(
        allow_null=True, help_text="the QR code of `payment_uri` (SVG; same API key), while it is to be paid"
    )
    transaction = serializers.DictField(allow_null=True, help_text="the transfer that paid it")
    failure_reason = serializers.CharField(allow_null=True)
    expires_at = serializers.DateTimeField(help_text="pay it before then, or it fails")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class SettlementSerializer(serializers.Serializer):
    """An outflow transaction from your payment addresses (`selectors_settlements.settlement_representation`)."""

    id = serializers.CharField()
    object = serializers.CharField()
    kind = serializers.ChoiceField(choices=Settlement.Kind.choices)
    canonical = serializers.BooleanField()
    network = serializers.CharField()
    tx_hash = serializers.CharField()
    block_height = serializers.IntegerField(allow_null=True)
    block_hash = serializers.CharField(allow_null=True)
    seen_at = serializers.DateTimeField()
    network_fee = MoneySerializer(allow_null=True)
    fee_asset = serializers.CharField(allow_null=True)
    destinations = serializers.ListField(child=serializers.DictField())
    legs = serializers.ListField(
        child=serializers.DictField(),
        help_text="per payment: payment_intent, asset, amount, network_fee (its share), fiat_value",
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class SettlementListQuery(serializers.Serializer):
    payment_intent = serializers.CharField(max_length=40, required=False)
    kind = serializers.ChoiceField(choices=Settlement.Kind.choices, required=False)

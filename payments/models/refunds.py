"""Refunds: their own lifecycle beside the payment's, derived from evidence (the request and its
approval, the destination someone entered, a cancel, and the transfer the chain shows to the destination),
never written by hand. The merchant pays a refund from its own wallet; the gateway only watches."""

from __future__ import annotations

from django.db import models

from .evidence import ChainObservation
from .ids import public_id
from .intents import PaymentIntent
from .merchants import NUMERIC_UINT256, Merchant
from .reference import NetworkAsset

REFUND_EVENT_TYPES = (
    "refund.created",
    "refund.approved",
    "refund.detected",
    "refund.succeeded",
    "refund.failed",
    "refund.canceled",
    "refund.reverted",
)


def refund_id() -> str:
    return public_id("re")


class Refund(models.Model):
    class State(models.TextChoices):
        REQUESTED = "requested", "requested (waiting for approval)"
        APPROVED = "approved", "approved (waiting for the destination)"
        AWAITING_PAYMENT = "awaiting_payment", "awaiting the merchant's payment"
        DETECTED = "detected", "payment seen, confirming"
        CONFIRMED = "confirmed", "confirmed (succeeded)"
        CANCELED = "canceled", "canceled"
        FAILED = "failed", "failed"

    class AmountKind(models.TextChoices):
        RECEIVED = "received", "everything received"
        FIAT = "fiat", "a fiat amount at the day's rate"
        EXCESS = "excess", "the overpaid excess"
        CUSTOM = "custom", "a custom amount"

    OPEN_STATES = (State.REQUESTED, State.APPROVED, State.AWAITING_PAYMENT, State.DETECTED)
    # What counts against the amount received: everything not canceled and not failed without a payment.
    HOLDING_STATES = (*OPEN_STATES, State.CONFIRMED)

    id = models.CharField(primary_key=True, max_length=40, default=refund_id, editable=False)
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="refunds")
    intent = models.ForeignKey(PaymentIntent, on_delete=models.PROTECT, related_name="refunds")
    network_asset = models.ForeignKey(NetworkAsset, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=20, choices=State.choices, default=State.REQUESTED)
    reason = models.TextField(help_text="why the refund is made (the requester's words)")
    amount_kind = models.CharField(max_length=12, choices=AmountKind.choices)
    amount_base_units = models.DecimalField(**NUMERIC_UINT256)
    # A fiat refund: the amount asked and the rate that converted it (evidence, like a quote's).
    fiat_amount = models.DecimalField(max_digits=40, decimal_places=18, null=True, blank=True)
    fiat_currency = models.CharField(max_length=12, blank=True)
    rate = models.DecimalField(max_digits=40, decimal_places=18, null=True, blank=True)
    rate_source = models.CharField(max_length=80, blank=True)
    rate_time = models.DateTimeField(null=True, blank=True)
    # Who asked and who approved: "api:<key prefix>" or "user:<username>", with their role.
    requested_by = models.CharField(max_length=200)
    approved_by = models.CharField(max_length=200, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    destination = models.CharField(max_length=100, blank=True, help_text="lower case for EVM and bech32")
    destination_set_by = models.CharField(max_length=200, blank=True)
    destination_set_at = models.DateTimeField(null=True, blank=True)
    canceled_by = models.CharField(max_length=200, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    # The merchant must pay by then once the destination is known; the customer's link works until then.
    expires_at = models.DateTimeField()
    failure_reason = models.CharField(max_length=200, blank=True)
    # The transfer that paid it (or failed it: the wrong amount), as the scanner or support attached it.
    observation = models.OneToOneField(
        ChainObservation, null=True, blank=True, on_delete=models.PROTECT, related_name="refund"
    )
    event_revision = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount_base_units__gt=0), name="refund_amount_gt0"),
            models.CheckConstraint(condition=~models.Q(reason=""), name="refund_has_a_reason"),
        ]
        indexes = [
            models.Index(fields=["merchant", "created_at"], name="refund_merchant_created"),
            models.Index(
                fields=["destination"],
                condition=models.Q(state__in=["awaiting_payment", "detected"]),
                name="refund_watched_destination",
            ),
        ]

    def __str__(self) -> str:
        return self.id


# Module-level names of the choice sets, for the OpenAPI schema's enum names (SPECTACULAR_SETTINGS).
RefundState = Refund.State
RefundAmountKind = Refund.AmountKind

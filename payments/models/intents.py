"""Payment intents (the explicit state machine), their quotes, and idempotency records."""

from __future__ import annotations

from django.db import models
from django_fsm import FSMField, transition

from .ids import checkout_token, intent_id
from .merchants import NUMERIC_UINT256, Merchant, PaymentAddress, Wallet
from .reference import NetworkAsset


class PaymentState(models.TextChoices):
    CREATED = "created"
    AWAITING_PAYMENT = "awaiting_payment"
    DETECTED = "detected"
    CONFIRMING = "confirming"
    PAID = "paid"
    UNDERPAID = "underpaid"
    OVERPAID = "overpaid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


S = PaymentState
# Which states each state may be entered from. Evidence may arrive in any order (a scanner that was down
# finds an on-time payment after the expiry sweep ran; a reorg takes a paid payment back), so most
# states are reachable from most others; what the machine forbids is leaving `refunded`, and entering
# `created` or `awaiting_payment` from anything but an unpaid state.
_FUNDED = [S.DETECTED, S.CONFIRMING, S.PAID, S.UNDERPAID, S.OVERPAID]
# `refunded` is left only when the evidence that made it changes: a refund's transaction (or a payment's)
# reorged away sends the payment back to what the rest of its evidence says.
ALLOWED_SOURCES: dict[str, list[str]] = {
    S.AWAITING_PAYMENT: [S.CREATED, *_FUNDED],
    S.DETECTED: [S.AWAITING_PAYMENT, *_FUNDED, S.EXPIRED, S.FAILED, S.REFUNDED],
    S.CONFIRMING: [S.AWAITING_PAYMENT, *_FUNDED, S.EXPIRED, S.FAILED, S.REFUNDED],
    S.PAID: [S.AWAITING_PAYMENT, *_FUNDED, S.EXPIRED, S.FAILED, S.REFUNDED],
    S.UNDERPAID: [S.AWAITING_PAYMENT, *_FUNDED, S.EXPIRED, S.FAILED, S.REFUNDED],
    S.OVERPAID: [S.AWAITING_PAYMENT, *_FUNDED, S.EXPIRED, S.FAILED, S.REFUNDED],
    S.EXPIRED: [S.CREATED, S.AWAITING_PAYMENT, *_FUNDED, S.FAILED, S.REFUNDED],
    S.FAILED: [S.CREATED, S.AWAITING_PAYMENT, *_FUNDED, S.EXPIRED, S.REFUNDED],
    S.REFUNDED: [*_FUNDED, S.EXPIRED, S.FAILED],
}


class PaymentIntent(models.Model):
    """What the merchant asked for, and the state its evidence proves.

    `representation` (not a column) is the API representation that `services` built for the event
    snapshot of the version it just wrote, so a view that answers with it need not build it again.

    `state` is protected: it changes only through the transitions below, which only
    `services.payment_settle` calls, with the verdict of `policy.evaluate`. The policy fields
    (`required_confirmations`, tolerances, late window) are a snapshot taken when the asset is assigned."""

    representation: dict | None = None  # see the docstring; set by services, never stored
    id = models.CharField(primary_key=True, max_length=40, default=intent_id, editable=False)
    # indexed by intent_merchant_created, which starts with it
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="intents", db_index=False)
    state = FSMField(default=S.CREATED, choices=S.choices, protected=True)
    merchant_order_id = models.CharField(max_length=200, blank=True)
    customer_id = models.CharField(max_length=200, blank=True)
    # What was asked: a price in a fiat currency or in the asset itself.
    price_amount = models.DecimalField(max_digits=40, decimal_places=18)
    price_currency = models.CharField(max_length=12)
    # Assigned when the asset/network is chosen (at creation or later on checkout).
    network_asset = models.ForeignKey(NetworkAsset, null=True, blank=True, on_delete=models.PROTECT)
    wallet = models.ForeignKey(Wallet, null=True, blank=True, on_delete=models.PROTECT)
    address = models.OneToOneField(
        PaymentAddress, null=True, blank=True, on_delete=models.PROTECT, related_name="intent"
    )
    amount_due_base_units = models.DecimalField(null=True, blank=True, **NUMERIC_UINT256)
    quote = models.OneToOneField("Quote", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    required_confirmations = models.PositiveIntegerField(null=True, blank=True)
    underpayment_tolerance_bps = models.PositiveIntegerField(default=0)
    overpayment_tolerance_bps = models.PositiveIntegerField(default=0)
    late_payment_window_minutes = models.PositiveIntegerField(default=24 * 60)
    expires_at = models.DateTimeField()
    canceled_at = models.DateTimeField(null=True, blank=True)
    fulfilled_at = models.DateTimeField(
        null=True, blank=True, help_text="when the merchant reported the order fulfilled (API)"
    )
    fulfilment_reference = models.CharField(
        max_length=200, blank=True, help_text="the merchant's shipment or delivery reference"
    )
    success_url = models.URLField(max_length=2000, blank=True)
    cancel_url = models.URLField(max_length=2000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    checkout_token = models.CharField(max_length=64, unique=True, default=checkout_token, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Derived from evidence by the last settle (a cache for listing; `verify_payments` checks it).
    amount_seen_base_units = models.DecimalField(default=0, **NUMERIC_UINT256)
    amount_confirmed_base_units = models.DecimalField(default=0, **NUMERIC_UINT256)
    # What confirmed refunds have paid back: stored with the state by `payment_settle`, from its evidence.
    amount_refunded_base_units = models.DecimalField(default=0, **NUMERIC_UINT256)
    flags = models.JSONField(default=list, blank=True)
    event_sequence = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["merchant", "-created_at", "-id"], name="intent_merchant_created"),
            models.Index(fields=["merchant", "merchant_order_id"], name="intent_merchant_order"),
            models.Index(fields=["state", "expires_at"], name="intent_state_expiry"),
        ]

    def __str__(self) -> str:
        return self.id

    # One transition per target state; the sources are the machine above.
    @transition(field=state, source=ALLOWED_SOURCES[S.AWAITING_PAYMENT], target=S.AWAITING_PAYMENT)
    def to_awaiting_payment(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.DETECTED], target=S.DETECTED)
    def to_detected(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.CONFIRMING], target=S.CONFIRMING)
    def to_confirming(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.PAID], target=S.PAID)
    def to_paid(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.UNDERPAID], target=S.UNDERPAID)
    def to_underpaid(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.OVERPAID], target=S.OVERPAID)
    def to_overpaid(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.EXPIRED], target=S.EXPIRED)
    def to_expired(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.FAILED], target=S.FAILED)
    def to_failed(self) -> None: ...

    @transition(field=state, source=ALLOWED_SOURCES[S.REFUNDED], target=S.REFUNDED)
    def to_refunded(self) -> None: ...

    def transition_method(self, target: str):
        return getattr(self, f"to_{target}")


class Quote(models.Model):
    """Evidence of a conversion: the rate, where and when it came from, and until when it holds."""

    price_amount = models.DecimalField(max_digits=40, decimal_places=18)
    price_currency = models.CharField(max_length=12)
    network_asset = models.ForeignKey(NetworkAsset, on_delete=models.PROTECT, related_name="+")
    rate = models.DecimalField(max_digits=40, decimal_places=18, help_text="price currency per 1 asset")
    source = models.CharField(max_length=80)
    rate_time = models.DateTimeField()
    quoted_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    amount_base_units = models.DecimalField(**NUMERIC_UINT256)
    # The amount was the converted price rounded up to this many decimals of the asset (null: to the
    # base unit, as quotes made before display precisions were).
    rounded_to_decimals = models.PositiveSmallIntegerField(null=True, blank=True)


class IdempotencyRecord(models.Model):
    """A POST's Idempotency-Key, the fingerprint of its request and the response it produced.
    Written in the same transaction as the request's effects, so both exist or neither does."""

    # indexed by idempotency_merchant_key_unique, which starts with it
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "key"], name="idempotency_merchant_key_unique"),
        ]

"""What finance adds to payments' evidence: the value of each payment at the rate when it was paid (read
from payments' event stream, like a merchant would) and the operator's service fee schedule per merchant
(for billing: computed, never deducted; the gateway holds no funds)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models

from payments.models import Merchant, PaymentIntent
from payments.pricing import FIAT_CURRENCIES


class FeedCursor(models.Model):
    """How far a reader of payments' event stream has got (the events' `position`)."""

    name = models.CharField(max_length=40, unique=True)
    position = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at {self.position}"


class PaidValuation(models.Model):
    """The rate of the payment's asset in its fiat currency (USD for a price in crypto) when it last became
    paid or overpaid: fetched from the rate source as the event was read, so `rate_time` is within the
    reader's poll of `paid_at`. Empty while the source is unreachable (retried)."""

    intent = models.OneToOneField(PaymentIntent, on_delete=models.PROTECT, related_name="+", primary_key=True)
    event_id = models.CharField(max_length=40, help_text="the payment.paid / payment.overpaid event valued")
    paid_at = models.DateTimeField()
    currency = models.CharField(max_length=12)
    rate = models.DecimalField(max_digits=40, decimal_places=18, null=True, blank=True)
    rate_source = models.CharField(max_length=80, blank=True)
    rate_time = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(
                fields=["updated_at"], condition=models.Q(rate__isnull=True), name="valuation_unpriced"
            )
        ]

    def __str__(self) -> str:
        return f"{self.intent_id} at {self.rate} {self.currency}"


class ServiceFeeSchedule(models.Model):
    """From `valid_from` on (until the next schedule), a paid payment's service fee is `percent_bps` of its
    price plus `fixed_amount`, in `currency`: for a payment priced in that currency, or valued in it when
    paid. Set by the operator for billing; zero when a merchant has none."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    valid_from = models.DateTimeField()
    currency = models.CharField(max_length=12, choices=[(c, c) for c in FIAT_CURRENCIES])
    percent_bps = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(10_000)], help_text="basis points of the price: 100 = 1%"
    )
    fixed_amount = models.DecimalField(max_digits=20, decimal_places=2, default=0)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["merchant", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["merchant", "valid_from"], name="fee_schedule_one_per_start"),
            models.CheckConstraint(
                condition=models.Q(percent_bps__lte=10_000), name="fee_schedule_bps_le_100pct"
            ),
            models.CheckConstraint(condition=models.Q(fixed_amount__gte=0), name="fee_schedule_fixed_ge0"),
        ]

    def __str__(self) -> str:
        return f"{self.merchant_id} from {self.valid_from:%Y-%m-%d}: {self.percent_bps} bps + {self.fixed_amount}"


class Report(models.Model):
    """Not a table: what the finance reports need permission for, and their entry in the admin."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_reports", "View the finance reports (reconciliation, totals)"),
            ("export_reconciliation", "Export the reconciliation as CSV"),
        ]
        verbose_name = "finance report"
        verbose_name_plural = "finance reports"


class VerificationRun(models.Model):
    """One re-verification: the payments in a window whose counted transactions were fetched again from
    the chain and re-evaluated (`reconciliation.verification.reverify`)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    since = models.DateTimeField(help_text="payments created from")
    until = models.DateTimeField(null=True, blank=True, help_text="payments created before")
    payments = models.PositiveIntegerField(default=0)
    transactions = models.PositiveIntegerField(default=0)
    mismatches = models.PositiveIntegerField(default=0)
    errors = models.TextField(blank=True, help_text="networks that could not be asked (the run went on)")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"run {self.pk} at {self.started_at:%Y-%m-%d %H:%M}: {self.mismatches} mismatch(es)"


class VerificationMismatch(models.Model):
    """What a run found: a counted transfer the chain no longer shows as stored, or a state the chain's
    evidence would not give. Cleared by a later run that finds the payment as stored."""

    class Problem(models.TextChoices):
        NOT_FOUND = "not_found", "the node knows no such transaction"
        NOT_IN_BLOCK = "not_in_block", "the transaction is no longer in a block (reorged out)"
        OTHER_BLOCK = "other_block", "the transaction is in another block than stored (reorged, mined again)"
        NO_TRANSFER = "no_transfer", "the transaction does not pay that output to the address in that asset"
        AMOUNT = "amount", "the chain's amount differs from the stored one"
        STATE = "state", "the chain's evidence gives another state than stored"

    run = models.ForeignKey(VerificationRun, on_delete=models.CASCADE, related_name="found")
    intent = models.ForeignKey(PaymentIntent, on_delete=models.PROTECT, related_name="+")
    network = models.CharField(max_length=40)
    tx_hash = models.CharField(max_length=80, blank=True)
    output_index = models.IntegerField(null=True, blank=True)
    problem = models.CharField(max_length=20, choices=Problem.choices)
    detail = models.CharField(max_length=300)
    stored_state = models.CharField(max_length=20)
    evidence_state = models.CharField(max_length=20)
    found_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-found_at"]
        indexes = [
            models.Index(
                fields=["intent"], condition=models.Q(cleared_at__isnull=True), name="mismatch_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.intent_id}: {self.problem}"


AMOUNT = {"max_digits": 79, "decimal_places": 0}  # base units, signed (a difference may be negative)


class DailyClose(models.Model):
    """One merchant's payment addresses for one asset on one network over one UTC day, from the stored
    evidence: opening + received - swept - refunded - other outflows - fees = closing; and, at the
    height the chain reported when the close ran, the chain's own balance of those addresses beside the
    evidence's (a difference opens a case and tells the payments whose addresses differ)."""

    class Status(models.TextChoices):
        BALANCED = "balanced", "balanced: the chain agrees"
        DIFFERENCE = "difference", "the chain's balance differs"
        UNCHECKED = "unchecked", "the chain could not be asked"

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    network_asset = models.ForeignKey("payments.NetworkAsset", on_delete=models.PROTECT, related_name="+")
    day = models.DateField()
    opening = models.DecimalField(**AMOUNT)
    received = models.DecimalField(**AMOUNT)
    swept = models.DecimalField(
        **AMOUNT, help_text="to treasuries and within the wallet (sweeps, consolidations)"
    )
    refunded = models.DecimalField(**AMOUNT, help_text="refunds paid from payment addresses")
    other_out = models.DecimalField(**AMOUNT, help_text="unknown outflows")
    fees = models.DecimalField(**AMOUNT, help_text="network fees paid by payment addresses, in this asset")
    closing = models.DecimalField(**AMOUNT)
    addresses = models.PositiveIntegerField(default=0)
    check_height = models.PositiveBigIntegerField(null=True, blank=True)
    evidence_balance = models.DecimalField(**AMOUNT, null=True, blank=True)
    chain_balance = models.DecimalField(**AMOUNT, null=True, blank=True)
    difference = models.DecimalField(**AMOUNT, null=True, blank=True, help_text="chain minus evidence")
    differences = models.JSONField(default=list, blank=True, help_text="per address: evidence, chain")
    status = models.CharField(max_length=12, choices=Status.choices)
    detail = models.CharField(max_length=300, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "merchant", "network_asset"]
        constraints = [
            models.UniqueConstraint(fields=["merchant", "network_asset", "day"], name="close_one_per_day"),
        ]

    def __str__(self) -> str:
        return f"{self.merchant_id} {self.network_asset_id} {self.day}: {self.status}"

"""Settlements: what each outflow transaction did with the merchant's money, derived from the outflow
evidence (never entered by hand): where it went (`sweep` to a declared treasury, `consolidation` to the
same wallet, `refund` the transfer a refund's evidence says paid it, anything else `unknown_outflow`),
and legs linking the payments whose funds it moved, with the network fee attributed to them."""

from __future__ import annotations

from django.db import models

from .ids import public_id
from .intents import PaymentIntent
from .merchants import NUMERIC_UINT256, Merchant
from .outflows import OutflowTransaction
from .reference import Network, NetworkAsset

# The events a settlement writes, per payment whose funds it moved (`services.settlements`).
SETTLEMENT_EVENT_TYPES = (
    "settlement.created",
    "settlement.unexpected_outflow",
    "settlement.reorged",
    "settlement.restored",
)


def settlement_id() -> str:
    return public_id("stl")


class Settlement(models.Model):
    """One merchant's part of one outflow transaction (almost always the whole of it). Re-derived
    whenever its transaction's evidence changes (`services.settlements_derive`); `canonical` follows the
    transaction's."""

    class Kind(models.TextChoices):
        SWEEP = "sweep", "sweep to a treasury address"
        CONSOLIDATION = "consolidation", "consolidation within the wallet"
        REFUND = "refund", "refund"
        UNKNOWN_OUTFLOW = "unknown_outflow", "unknown outflow"
        FEE_ONLY = "fee_only", "network fee only (nothing moved)"

    id = models.CharField(primary_key=True, max_length=40, default=settlement_id, editable=False)
    transaction = models.ForeignKey(OutflowTransaction, on_delete=models.PROTECT, related_name="settlements")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="settlements")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    canonical = models.BooleanField(default=True)
    # Bumped each time `canonical` flips (a reorg, a return): names the event that reports the flip.
    revision = models.PositiveIntegerField(default=0)
    # This merchant's share of the transaction's network fee, in the native coin's base units (null when
    # the node could not say what the fee was).
    fee_base_units = models.DecimalField(null=True, blank=True, **NUMERIC_UINT256)
    fee_asset = models.ForeignKey(
        NetworkAsset, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The transaction's destinations, each with how it was classified for this merchant:
    # [{"index", "address", "amount", "token_contract", "kind": sweep|consolidation|refund|unknown|change}]
    destinations = models.JSONField(default=list)
    seen_at = models.DateTimeField(help_text="when the transaction was first seen (mempool or block time)")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-seen_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "merchant"], name="settlement_tx_merchant_unique"),
        ]
        indexes = [models.Index(fields=["merchant", "seen_at"], name="settlement_merchant_seen")]

    def __str__(self) -> str:
        return self.id


class SettlementLeg(models.Model):
    """The funds of one payment (in one asset) that a settlement moved, its pro-rata share of the
    network fee, and their fiat value when the transaction was seen (rate, source and time kept)."""

    settlement = models.ForeignKey(Settlement, on_delete=models.CASCADE, related_name="legs")
    position = models.PositiveIntegerField()
    intent = models.ForeignKey(
        PaymentIntent, null=True, blank=True, on_delete=models.PROTECT, related_name="settlement_legs"
    )
    network_asset = models.ForeignKey(NetworkAsset, null=True, blank=True, on_delete=models.PROTECT)
    token_contract = models.CharField(max_length=64, blank=True)
    amount_base_units = models.DecimalField(**NUMERIC_UINT256)
    fee_base_units = models.DecimalField(null=True, blank=True, **NUMERIC_UINT256)
    fiat_currency = models.CharField(max_length=12, blank=True)
    fiat_value = models.DecimalField(max_digits=40, decimal_places=18, null=True, blank=True)
    rate = models.DecimalField(max_digits=40, decimal_places=18, null=True, blank=True)
    rate_source = models.CharField(max_length=80, blank=True)
    rate_time = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["settlement", "position"]
        constraints = [
            models.UniqueConstraint(fields=["settlement", "position"], name="settlement_leg_position_unique"),
            models.CheckConstraint(
                condition=models.Q(amount_base_units__gte=0), name="settlement_leg_amount_gte0"
            ),
        ]


# The choice set's module-level name, for the OpenAPI schema's enum names (SPECTACULAR_SETTINGS).
SettlementKind = Settlement.Kind

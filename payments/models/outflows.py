"""Outflows: money leaving an address the gateway derived, as the chains showed it. Evidence like the
observations of payments: written only by `services.outflow_record`, unique per network, transaction and
index (recording one twice changes nothing), their transaction's `canonical` flag turned false when a
reorg drops its block or the unconfirmed transaction is replaced or dropped."""

from __future__ import annotations

from django.db import models

from .evidence import ChainObservation
from .intents import PaymentIntent
from .merchants import NUMERIC_UINT256
from .reference import Network, NetworkAsset


class OutflowTransaction(models.Model):
    """A transaction that moved money out of one or more derived addresses: where it is on the chain,
    where it sent the value (`destinations`) and the network fee it paid, in the native coin's base units.

    `destinations`: [{"index", "address", "amount", "token_contract", "script"}], every output of a
    Bitcoin-family transaction (amounts as strings), the recipients of the EVM transfers out of watched
    addresses. `fee_base_units` is null when the node could not say (an input's transaction unknown to a
    node without txindex); `fee_payer` is the EVM account that paid the gas (empty for Bitcoin-family)."""

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    tx_hash = models.CharField(max_length=80)
    block_height = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=80, blank=True)
    block_time = models.DateTimeField(null=True, blank=True)
    position_in_block = models.PositiveIntegerField(null=True, blank=True)
    seen_unconfirmed_at = models.DateTimeField(null=True, blank=True)
    canonical = models.BooleanField(default=True)
    fee_base_units = models.DecimalField(null=True, blank=True, **NUMERIC_UINT256)
    fee_payer = models.CharField(max_length=100, blank=True)
    destinations = models.JSONField(default=list)
    recorded_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["network", "tx_hash"], name="outflow_tx_network_tx_unique"),
            models.CheckConstraint(
                condition=models.Q(block_time__isnull=False) | models.Q(seen_unconfirmed_at__isnull=False),
                name="outflow_tx_has_first_seen_time",
            ),
        ]
        indexes = [
            models.Index(
                fields=["network", "block_height"],
                condition=models.Q(canonical=True),
                name="outflow_tx_canonical_height",
            )
        ]

    def __str__(self) -> str:
        return f"{self.network_id}:{self.tx_hash}"


class Outflow(models.Model):
    """Value that left one derived address in one transaction: a spent output the gateway had credited
    (Bitcoin-family: `index` is the input's, `spent_observation` the output it spends), a token transfer
    out (EVM: the log index) or a transaction the address sent (EVM: index -1, its native value, 0 for a
    token sweep, whose gas the transaction row carries). Never changed once written."""

    transaction = models.ForeignKey(OutflowTransaction, on_delete=models.PROTECT, related_name="outflows")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    tx_hash = models.CharField(max_length=80)
    index = models.IntegerField()
    address = models.CharField(max_length=100, db_index=True, help_text="lower case for EVM")
    intent = models.ForeignKey(
        PaymentIntent, null=True, blank=True, on_delete=models.PROTECT, related_name="outflows"
    )
    network_asset = models.ForeignKey(NetworkAsset, null=True, blank=True, on_delete=models.PROTECT)
    token_contract = models.CharField(max_length=64, blank=True, help_text="empty for the native coin")
    amount_base_units = models.DecimalField(**NUMERIC_UINT256)
    spent_observation = models.ForeignKey(
        ChainObservation, null=True, blank=True, on_delete=models.PROTECT, related_name="spent_by"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["network", "tx_hash", "index"], name="outflow_network_tx_index_unique"
            ),
            models.CheckConstraint(condition=models.Q(amount_base_units__gte=0), name="outflow_amount_gte0"),
        ]

    def __str__(self) -> str:
        return f"{self.network_id}:{self.tx_hash}:{self.index}"

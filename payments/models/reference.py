"""Assets and networks: reference data, editable in the admin, seeded by a data migration."""

from __future__ import annotations

from urllib.parse import quote

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models

_HTTPS_URL = URLValidator(schemes=["https"])


def explorer_tx_url_validate(value: str) -> None:
    """A block explorer's transaction page: an https URL with `{tx}` where the hash goes (a link a
    support agent clicks must not downgrade to http nor point at something other than a URL)."""
    if "{tx}" not in value:
        raise ValidationError("put {tx} where the transaction hash goes", code="explorer_no_tx")
    try:
        _HTTPS_URL(value.replace("{tx}", "0"))
    except ValidationError as exc:
        raise ValidationError("an https URL, e.g. https://etherscan.io/tx/{tx}", code="explorer_url") from exc


class Chain(models.TextChoices):
    """Chain family: decides how addresses are derived and how the chain is watched."""

    BITCOIN = "bitcoin", "Bitcoin"
    LITECOIN = "litecoin", "Litecoin"
    EVM = "evm", "EVM"


class Network(models.Model):
    """One chain network (e.g. `ethereum`, `litecoin-regtest`). EVM networks are told apart by chain id."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    chain = models.CharField(max_length=16, choices=Chain.choices)
    chain_id = models.PositiveBigIntegerField(null=True, blank=True, help_text="EVM chain id")
    bech32_hrp = models.CharField(max_length=8, blank=True, help_text="Bitcoin-family bech32 prefix")
    base58_versions = ArrayField(
        models.PositiveSmallIntegerField(),
        default=list,
        blank=True,
        help_text="Bitcoin-family: the version bytes of legacy base58 addresses (P2PKH, P2SH) typed-in "
        "addresses may use; empty: bech32 only",
    )
    is_testnet = models.BooleanField(default=False)
    uri_scheme = models.CharField(max_length=16, help_text="bitcoin, litecoin or ethereum")
    enabled = models.BooleanField(default=True)
    rpc_url = models.CharField(
        max_length=300,
        blank=True,
        help_text=(
            "what the scanner reads: an EVM JSON-RPC URL, a Bitcoin/Litecoin Core URL with credentials "
            "(http://user:pass@host:port), or an Esplora API as esplora+https://host/api; empty: not scanned"
        ),
    )
    scan_start_height = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="first block to scan when no cursor exists (default: the tip)"
    )
    explorer_tx_url = models.CharField(
        "block explorer (transaction URL)",
        max_length=300,
        blank=True,
        validators=[explorer_tx_url_validate],
        help_text="https URL of a transaction's page, {tx} for its hash; empty: transactions are not linked",
    )

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["chain_id"], name="network_chain_id_unique"),
            models.CheckConstraint(
                condition=~models.Q(chain="evm") | models.Q(chain_id__isnull=False),
                name="network_evm_has_chain_id",
            ),
            models.CheckConstraint(
                condition=models.Q(chain="evm") | ~models.Q(bech32_hrp=""),
                name="network_utxo_has_hrp",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def watched(self) -> bool:
        """Enabled and with a node to scan: only then are payments on it offered and accepted."""
        return self.enabled and bool(self.rpc_url)

    def explorer_url(self, tx_hash: str) -> str | None:
        """The explorer's page of the transaction, or None when the network names no explorer."""
        if not self.explorer_tx_url:
            return None
        return self.explorer_tx_url.replace("{tx}", quote(tx_hash, safe=""))


class Asset(models.Model):
    """A currency that can be paid (BTC, ETH, USDC ...). Stablecoins carry their peg currency."""

    code = models.CharField(max_length=12, unique=True)
    name = models.CharField(max_length=60)
    peg_currency = models.CharField(max_length=3, blank=True, help_text="e.g. USD for a USD stablecoin")
    # An amount due converted from a fiat price is rounded up to this many decimals (capped at the
    # asset's decimals on the network), so that a person can read and type it; part of the quote.
    display_decimals = models.PositiveSmallIntegerField(
        default=8,
        help_text=(
            "decimals an amount due quoted from a fiat price is rounded up to (at most the asset's "
            "decimals on its network), e.g. 8 for BTC/ETH, 6 for USDC"
        ),
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class NetworkAsset(models.Model):
    """An asset as it exists on one network: native coin (no contract) or token (contract, decimals)."""

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="assets")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="networks")
    contract_address = models.CharField(max_length=64, blank=True, help_text="empty for the native coin")
    decimals = models.PositiveSmallIntegerField()
    default_confirmations = models.PositiveIntegerField()
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["network__code", "asset__code"]
        constraints = [
            models.UniqueConstraint(fields=["network", "asset"], name="network_asset_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.asset.code} on {self.network.code}"

    @property
    def is_native(self) -> bool:
        return not self.contract_address

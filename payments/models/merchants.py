"""Merchants, their payment policy, API keys and watch-only wallets."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models

from .ids import merchant_id
from .reference import Chain, Network, NetworkAsset

NUMERIC_UINT256 = {"max_digits": 78, "decimal_places": 0}


_ORIGIN = re.compile(r"\Ahttps?://[a-z0-9.-]+(:[0-9]{1,5})?\Z")


def validate_origin(value: str) -> None:
    """scheme://host[:port], nothing after: what a browser compares `frame-ancestors` against (plain
    http only for this machine)."""
    shaped = bool(_ORIGIN.match(value))
    local = shaped and urlsplit(value).hostname in ("localhost", "127.0.0.1")
    if not shaped or (value.startswith("http://") and not local):
        raise ValidationError(
            f"{value!r} is not an origin like https://shop.example (http only for localhost)",
            code="invalid_origin",
        )


class Merchant(models.Model):
    """A merchant and its payment policy. The policy is copied onto each intent when it is assigned,
    so a later policy change never rewrites the evidence of an existing payment."""

    id = models.CharField(primary_key=True, max_length=40, default=merchant_id, editable=False)
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True)
    expiry_minutes = models.PositiveIntegerField(default=15)
    late_payment_window_minutes = models.PositiveIntegerField(default=24 * 60)
    underpayment_tolerance_bps = models.PositiveIntegerField(
        default=0, help_text="accepted shortfall, in basis points of the amount due (100 = 1 %)"
    )
    overpayment_tolerance_bps = models.PositiveIntegerField(
        default=0, help_text="excess not flagged as overpaid, in basis points of the amount due"
    )
    checkout_origins = ArrayField(
        models.CharField(max_length=200, validators=[validate_origin]),
        default=list,
        blank=True,
        help_text="origins allowed to show the checkout in an iframe, e.g. https://shop.example "
        "(comma-separated); none: the checkout cannot be framed",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(underpayment_tolerance_bps__lte=10000), name="merchant_underpay_bps_range"
            ),
            models.CheckConstraint(
                condition=models.Q(expiry_minutes__gte=1), name="merchant_expiry_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ConfirmationRule(models.Model):
    """Confirmations a merchant requires for an asset on a network, optionally from an amount upward.
    The rule with the highest `min_amount_base_units` not above the amount due applies."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="confirmation_rules")
    network_asset = models.ForeignKey(NetworkAsset, on_delete=models.CASCADE, related_name="+")
    min_amount_base_units = models.DecimalField(default=0, **NUMERIC_UINT256)
    confirmations = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "network_asset", "min_amount_base_units"], name="confirmation_rule_unique"
            ),
        ]


class ApiKey(models.Model):
    """A merchant API key. Only a SHA-256 digest of the secret is stored; the key is shown once."""

    SCOPES = (
        "payments:read",
        "payments:write",
        "webhooks:read",
        "webhooks:write",
        "refunds:read",
        "refunds:write",
        "settlements:read",
        "reports:read",
    )

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80, blank=True)
    prefix = models.CharField(max_length=16, help_text="first characters of the key, to recognise it")
    digest = models.CharField(max_length=64, unique=True)
    scopes = ArrayField(models.CharField(max_length=32))
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.merchant_id})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Wallet(models.Model):
    """A watch-only account key (xpub/zpub/vpub) from which payment addresses are derived.

    One EVM wallet serves every EVM network (same address everywhere, one index sequence); a
    Bitcoin-family wallet belongs to one network (its address prefix). Addresses are derived ahead, a
    batch at a time under the wallet's row lock, into a pool of unclaimed `PaymentAddress` rows;
    `next_index` is the next index to derive. One key material serves at most one active wallet per
    address space; a later wallet with a deactivated wallet's key starts where that one stopped."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="wallets")
    chain = models.CharField(max_length=16, choices=Chain.choices)
    network = models.ForeignKey(
        Network, null=True, blank=True, on_delete=models.PROTECT, help_text="empty for EVM (all networks)"
    )
    account_key = models.CharField(max_length=120, help_text="account-level extended public key")
    key_fingerprint = models.CharField(
        max_length=64,
        editable=False,
        help_text="sha256 of the key's chain code and public key: the same whatever prefix it is written with",
    )
    address_space = models.CharField(
        max_length=16,
        editable=False,
        help_text="'evm', or the network's bech32 HRP: one key derives the same addresses where this is equal",
    )
    next_index = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "chain", "network"],
                condition=models.Q(is_active=True),
                nulls_distinct=False,
                name="wallet_one_active_per_chain_network",
            ),
            # Two active wallets deriving the same addresses would collide in the address pool: one
            # account key serves one active wallet per address space, across all merchants.
            models.UniqueConstraint(
                fields=["key_fingerprint", "address_space"],
                condition=models.Q(is_active=True),
                name="wallet_key_active_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.chain} wallet of {self.merchant_id}"


class PaymentAddress(models.Model):
    """An address derived for exactly one intent. Unique by constraint: never reused.

    Derived ahead into the wallet's pool (`claimed_at` empty); a create claims the lowest free index
    with `FOR UPDATE SKIP LOCKED`, so concurrent creates of one merchant do not wait on each other."""

    # indexed by address_wallet_index_unique, which starts with it
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="addresses", db_index=False)
    derivation_index = models.PositiveIntegerField()
    address = models.CharField(max_length=100, unique=True, help_text="lower case for EVM")
    # The form a payer is shown, so that a create writes its answer without deriving it again: EIP-55
    # checksummed for EVM, the address itself for Bitcoin-family. Empty for addresses claimed before it
    # existed (and, until a create's refill fills it in, for one derived by the version before it during
    # an upgrade: creates claim only addresses that have it).
    display_address = models.CharField(max_length=100, blank=True, db_default="", default="")
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["wallet", "derivation_index"], name="address_wallet_index_unique"
            ),
            # a customer is never shown an address nobody watches
            models.CheckConstraint(
                condition=models.Q(display_address="")
                | models.Q(address__iexact=models.F("display_address")),
                name="address_shown_is_the_address",
            ),
        ]
        indexes = [
            models.Index(
                fields=["wallet", "derivation_index"],
                condition=models.Q(claimed_at__isnull=True),
                name="address_pool_free",
            ),
        ]

    def __str__(self) -> str:
        return self.address


class TreasuryAddress(models.Model):
    """An address where the merchant moves its money on a network (its treasury, an exchange deposit
    address it owns), declared so that an outflow to it is recognised as a sweep. Checked for its network
    when declared (`accounts.treasury_address_add`); retired, never deleted (settlements name it)."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="treasury_addresses")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    address = models.CharField(max_length=100, help_text="lower case for EVM and bech32")
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "treasury addresses"
        constraints = [
            models.UniqueConstraint(
                fields=["network", "address"],
                condition=models.Q(retired_at__isnull=True),
                name="treasury_address_active_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.network_id}:{self.address}"

"""Factories for tests: merchants with watch-only wallets derived from the published BIP39 test mnemonic
("abandon" x 11 + "about"). Private keys appear only here, to produce the public test vectors."""

from __future__ import annotations

from payments.accounts import api_key_create, merchant_create, wallet_add
from payments.models import ApiKey, Merchant
from tests.nodes.merchant_keys import TEST_MNEMONIC, account_key  # noqa: F401 (used by tests)

# Published vectors (TOOLING.md): BIP84 m/84'/0'/0' and BIP44 ETH m/44'/60'/0'.
BIP84_ZPUB = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs"
BIP84_FIRST_ADDRESS = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
ETH_ACCOUNT_XPUB = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
ETH_FIRST_ADDRESS = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"


def make_merchant(name: str = "Test shop", *, account: int = 0, wallets: bool = True, **policy) -> Merchant:
    """A merchant with EVM, Bitcoin and Litecoin-regtest wallets at BIP44/84 account `account` (each
    merchant in one test needs its own account: addresses are unique across the gateway)."""
    merchant = merchant_create(name=name, **policy)
    if wallets:
        evm = ETH_ACCOUNT_XPUB if account == 0 else account_key(f"m/44'/60'/{account}'")
        btc = BIP84_ZPUB if account == 0 else account_key(f"m/84'/0'/{account}'")
        wallet_add(merchant=merchant, chain="evm", account_key=evm)
        wallet_add(merchant=merchant, chain="bitcoin", account_key=btc, network_code="bitcoin")
        wallet_add(
            merchant=merchant,
            chain="litecoin",
            account_key=account_key(f"m/84'/1'/{account}'", testnet=True),
            network_code="litecoin-regtest",
        )
    return merchant


def make_api_key(merchant: Merchant, scopes=("payments:read", "payments:write")) -> tuple[ApiKey, str]:
    return api_key_create(merchant=merchant, scopes=scopes)


def make_staff(*codenames: str, merchants=None, username: str | None = None):
    """A staff user (never superuser) holding exactly these model permissions ("app_label.codename" or a
    bare codename of payments or support), granted `merchants` (default: every merchant so far), as
    `grant_role --merchant` would grant them. A fresh instance: Django caches permissions per object."""
    from django.contrib.auth.models import Permission, User
    from django.db.models import Q
    from guardian.shortcuts import assign_perm

    from payments.admin_access import MERCHANT_ACCESS_PERMISSION

    user = User.objects.create_user(
        username=username or f"staff{User.objects.count()}", password="x", is_staff=True
    )
    wanted = Q()
    for name in codenames:
        app, _, codename = name.rpartition(".")
        wanted |= Q(codename=codename, content_type__app_label__in=[app] if app else ["payments", "support"])
    perms = Permission.objects.filter(wanted) if codenames else Permission.objects.none()
    assert perms.count() == len(set(codenames)), codenames
    user.user_permissions.set(perms)
    for merchant in Merchant.objects.all() if merchants is None else merchants:
        assign_perm(MERCHANT_ACCESS_PERMISSION, user, merchant)
    return User.objects.get(pk=user.pk)

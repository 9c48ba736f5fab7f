"""Services that write merchants, API keys and wallets."""

from __future__ import annotations

import copy
import hashlib
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max

from .errors import Conflict, InvalidRequest, NotFound
from .models import ApiKey, Chain, ConfirmationRule, Merchant, Network, NetworkAsset, Wallet
from .wallets import parse_account_key

API_KEY_PREFIX = "gwk_"
# last_used_at is a hint for operators, not an audit trail: write it at most this often per key.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def merchant_create(*, name: str, **policy) -> Merchant:
    """A merchant with the default payment policy, overridden by `policy` fields."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("a merchant needs a name", code="parameter_missing", param="name")
    merchant = Merchant(name=name, **policy)
    merchant.full_clean()
    merchant.save()
    return merchant


MAX_CONFIRMATIONS = 10_000


def confirmation_rule_set(
    *, merchant: Merchant, network_asset: NetworkAsset, confirmations: int, min_amount_base_units: int = 0
) -> ConfirmationRule:
    """The confirmations the merchant requires for an asset on a network from an amount due upward (a
    tier; 0: every amount). Setting a tier that exists changes its confirmations."""
    if (
        isinstance(confirmations, bool)
        or not isinstance(confirmations, int)
        or not 1 <= confirmations <= MAX_CONFIRMATIONS
    ):
        raise InvalidRequest(
            f"confirmations must be a whole number from 1 to {MAX_CONFIRMATIONS}",
            code="invalid_parameter",
            param="confirmations",
        )
    if not isinstance(min_amount_base_units, int) or not 0 <= min_amount_base_units < 10**78:
        raise InvalidRequest(
            "the tier's minimum amount must be zero or more", code="invalid_amount", param="min_amount"
        )
    rule, _ = ConfirmationRule.objects.update_or_create(
        merchant=merchant,
        network_asset=network_asset,
        min_amount_base_units=min_amount_base_units,
        defaults={"confirmations": confirmations},
    )
    return rule


def api_key_digest(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()


def api_key_create(*, merchant: Merchant, scopes: Iterable[str], name: str = "") -> tuple[ApiKey, str]:
    """A new key; returns the row and the key itself, which is never stored and cannot be shown again."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in ApiKey.SCOPES]
    if unknown or not scopes:
        raise InvalidRequest(
            f"unknown or no scopes {unknown}; known: {', '.join(ApiKey.SCOPES)}", code="invalid_scope"
        )
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        merchant=merchant, name=name, prefix=secret[:12], digest=api_key_digest(secret), scopes=scopes
    )
    return key, secret


def api_key_revoke(*, api_key: ApiKey, now: datetime) -> ApiKey:
    """Revoke a key: refused at once by this process, and by every other within GATEWAY_API_KEY_CACHE_S
    (the per-process cache of `api_key_authenticate`)."""
    if api_key.revoked_at is None:
        api_key.revoked_at = now
        api_key.save(update_fields=["revoked_at"])
    api_key_cache_clear()
    transaction.on_commit(api_key_cache_clear)  # inside a transaction a request may cache it meanwhile
    return api_key


def api_key_authenticate(*, presented: str, now: datetime) -> ApiKey | None:
    """The active or revoked key row for a presented secret (the caller checks `revoked_at`), or None.

    Every API request runs this, so a key found (with its merchant) is kept per process for
    GATEWAY_API_KEY_CACHE_S seconds: a revocation, a merchant disabled or a scope change made elsewhere is
    honoured by every process within that time (by this one at once, for a revocation through
    `api_key_revoke`). An unknown key is never kept: a key just created works at once, and made-up keys
    cannot fill the cache."""
    if not presented.startswith(API_KEY_PREFIX):
        return None
    digest = api_key_digest(presented)
    key = _api_key_cached(digest)
    if key is None:
        return None
    if key.revoked_at is None and (key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
        cached = _key_cache.get(digest)
        if cached is not None:
            cached[1].last_used_at = now  # written once a minute per process, not once per request
    return key


# digest -> (loaded at, monotonic seconds; the key with its merchant). Bounded by the keys that exist.
_key_cache: dict[str, tuple[float, ApiKey]] = {}
_KEY_CACHE_MAX = 4096
_clock = time.monotonic


def api_key_cache_clear() -> None:
    _key_cache.clear()


def _api_key_cached(digest: str) -> ApiKey | None:
    """A copy of the cached key and merchant (a request may change its own), or the row read afresh."""
    ttl = settings.GATEWAY_API_KEY_CACHE_S
    now = _clock()
    hit = _key_cache.get(digest)
    if hit is None or now - hit[0] >= ttl:
        key = _api_key_with_merchant(digest)
        if key is None:
            _key_cache.pop(digest, None)
            return None
        if ttl <= 0:
            return key
        if len(_key_cache) >= _KEY_CACHE_MAX:
            _key_cache.clear()
        hit = _key_cache[digest] = (now, key)
    key = copy.copy(hit[1])
    key.merchant = copy.copy(hit[1].merchant)
    return key


def wallet_add(
    *, merchant: Merchant, chain: str, account_key: str, network_code: str | None = None
) -> Wallet:
    """Register a watch-only account key. EVM wallets serve every EVM network; a Bitcoin-family wallet
    serves one network, whose mainnet/testnet kind must match the key's. A key that an active wallet of
    any merchant derives the same addresses from is refused (`wallet_key_in_use`); the key of a
    deactivated wallet continues that wallet's index sequence, so no address is derived twice."""
    with transaction.atomic():
        wallet = wallet_add_check(
            merchant=merchant, chain=chain, account_key=account_key, network_code=network_code
        )
        try:
            with transaction.atomic():
                wallet.save(force_insert=True)
        except IntegrityError as exc:  # the locks make this unlikely; the constraints make it certain
            raise _wallet_conflict(exc) from None
    return wallet


def wallet_add_check(
    *, merchant: Merchant, chain: str, account_key: str, network_code: str | None = None
) -> Wallet:
    """Everything `wallet_add` checks, without writing: the unsaved wallet it would create (its index
    sequence starting after any deactivated wallet with the key), or the GatewayError it would raise.
    Inside a transaction, the checks' locks hold to its end, so a save in the same transaction cannot
    race another add of the key (the admin's add form checks, then saves, in one transaction)."""
    if chain not in Chain.values:
        raise InvalidRequest(f"unknown chain {chain!r}", code="unknown_chain", param="chain")
    key = parse_account_key(account_key)
    network = None
    if chain == Chain.EVM:
        if not key.mainnet or key.version.prefix != "xpub":
            raise InvalidRequest("an EVM wallet takes the account xpub (m/44'/60'/0')", code="invalid_xpub")
    else:
        network_code = network_code or chain
        try:
            network = Network.objects.get(code=network_code)
        except Network.DoesNotExist:
            raise NotFound(f"unknown network {network_code!r}", code="unknown_network") from None
        if network.chain != chain:
            raise InvalidRequest(f"{network_code} is not a {chain} network", code="network_chain_mismatch")
        if key.mainnet == network.is_testnet:
            kind = "mainnet" if key.mainnet else "testnet"
            accepted = "tpub/vpub" if network.is_testnet else "xpub/zpub"
            raise InvalidRequest(
                f"a {kind} key ({key.version.prefix}) cannot serve {network_code}; it takes {accepted}",
                code="xpub_network_mismatch",
            )
        if key.version.chain not in (None, chain):
            raise InvalidRequest(
                f"a {key.version.chain} key ({key.version.prefix}) cannot serve {network_code}",
                code="xpub_network_mismatch",
            )
    wallet = Wallet(
        merchant=merchant,
        chain=chain,
        network=network,
        account_key=key.text,
        key_fingerprint=key.fingerprint,
        address_space=_address_space(chain, network),
    )
    _wallet_lock(wallet)
    _wallet_conflicts_check(wallet)
    wallet.next_index = _wallet_first_index(wallet)
    return wallet


def wallet_deactivate(*, wallet: Wallet) -> Wallet:
    """Stop deriving from the wallet: creates no longer claim its addresses. Its addresses, intents and
    index stay; its key may then serve a new wallet, which continues after it."""
    Wallet.objects.filter(pk=wallet.pk).update(is_active=False)
    wallet.is_active = False
    return wallet


def wallet_reactivate(*, wallet: Wallet) -> Wallet:
    """Serve payments from a deactivated wallet again, unless another active wallet has its key or its
    merchant's place for the chain and network; it continues after any wallet that used its key since."""
    with transaction.atomic():
        wallet = Wallet.objects.select_related("merchant", "network").get(pk=wallet.pk)
        if wallet.is_active:
            return wallet
        _wallet_lock(wallet)
        _wallet_conflicts_check(wallet)
        wallet.next_index = max(wallet.next_index, _wallet_first_index(wallet))
        wallet.is_active = True
        try:
            with transaction.atomic():
                wallet.save(update_fields=["is_active", "next_index"])
        except IntegrityError as exc:
            raise _wallet_conflict(exc) from None
    return wallet


def _address_space(chain: str, network: Network | None) -> str:
    """Where a key's addresses live: every EVM network shares one; a Bitcoin-family address is its HRP's."""
    return "evm" if chain == Chain.EVM else network.bech32_hrp


def _wallet_lock(wallet: Wallet) -> None:
    """Serialise adds and reactivations per merchant and per key material (always in that order), for the
    rest of the transaction; the unique constraints stand behind these locks."""
    with connection.cursor() as cursor:
        for name in (f"wallet-merchant:{wallet.merchant_id}", f"wallet-key:{wallet.key_fingerprint}"):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [name])


def _wallet_conflicts_check(wallet: Wallet) -> None:
    active = Wallet.objects.filter(is_active=True).exclude(pk=wallet.pk)
    holder = active.filter(key_fingerprint=wallet.key_fingerprint, address_space=wallet.address_space).first()
    if holder is not None:
        # Another merchant's wallet is not named: its existence is all the operator needs to know.
        whose = "this merchant's" if holder.merchant_id == wallet.merchant_id else "another merchant's"
        raise Conflict(
            f"this account key (in any of its spellings: xpub, zpub, vpub ...) is in use by {whose} active "
            f"{holder.chain} wallet; deactivate that wallet first",
            code="wallet_key_in_use",
        )
    if active.filter(merchant_id=wallet.merchant_id, chain=wallet.chain, network=wallet.network).exists():
        raise Conflict(
            "the merchant already has an active wallet for this chain and network", code="wallet_exists"
        )


def _wallet_first_index(wallet: Wallet) -> int:
    """The first index no wallet with this key has derived in this address space (0 for a new key)."""
    used = Wallet.objects.filter(
        key_fingerprint=wallet.key_fingerprint, address_space=wallet.address_space
    ).aggregate(Max("next_index"))["next_index__max"]
    return used or 0


def _wallet_conflict(exc: IntegrityError) -> Conflict:
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
    if constraint == "wallet_key_active_unique":
        return Conflict("this account key is in use by another active wallet", code="wallet_key_in_use")
    if constraint == "wallet_one_active_per_chain_network":
        return Conflict(
            "the merchant already has an active wallet for this chain and network", code="wallet_exists"
        )
    raise exc


def _api_key_with_merchant(digest: str) -> ApiKey | None:
    """The key and its merchant in one hand-written query: every API request runs it, and the ORM's
    query building costs more than the query itself."""
    with connection.cursor() as cursor:
        cursor.execute(_KEY_QUERY, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    width = len(ApiKey._meta.concrete_fields)
    key = _instance(ApiKey, row[:width])
    key.merchant = _instance(Merchant, row[width:])
    return key


def _instance(model, values):
    fields = model._meta.concrete_fields
    converted = []
    for f, value in zip(fields, values, strict=True):
        for converter in f.get_db_converters(connection):
            value = converter(value, f, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def _columns(model, alias: str) -> str:
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


_KEY_QUERY = (
    f"SELECT {_columns(ApiKey, 'k')}, {_columns(Merchant, 'm')} FROM {ApiKey._meta.db_table} k "
    f"JOIN {Merchant._meta.db_table} m ON m.id = k.merchant_id WHERE k.digest = %s"
)

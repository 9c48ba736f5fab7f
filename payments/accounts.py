"""Services that write merchants, API keys and wallets."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction

from .errors import Conflict, InvalidRequest, NotFound
from .models import ApiKey, Chain, Merchant, Network, Wallet
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
    if api_key.revoked_at is None:
        api_key.revoked_at = now
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_authenticate(*, presented: str, now: datetime) -> ApiKey | None:
    """The active or revoked key row for a presented secret (the caller checks `revoked_at`), or None."""
    if not presented.startswith(API_KEY_PREFIX):
        return None
    key = _api_key_with_merchant(api_key_digest(presented))
    if key is None:
        return None
    if key.revoked_at is None and (key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def wallet_add(
    *, merchant: Merchant, chain: str, account_key: str, network_code: str | None = None
) -> Wallet:
    """Register a watch-only account key. EVM wallets serve every EVM network; a Bitcoin-family wallet
    serves one network, whose mainnet/testnet kind must match the key's."""
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
    try:
        with transaction.atomic():
            return Wallet.objects.create(
                merchant=merchant, chain=chain, network=network, account_key=key.text
            )
    except IntegrityError:
        raise Conflict(
            "the merchant already has an active wallet for this chain and network", code="wallet_exists"
        ) from None


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

"""Payment addresses: claimed from each wallet's pool of addresses derived ahead (public keys only:
nothing here can spend), and the pools topped up."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from ..errors import Conflict, InvalidRequest
from ..models import (
    Network,
    NetworkAsset,
    PaymentAddress,
)
from ..selectors import shown_address
from ..wallets import AccountKey, derive_bech32_address, derive_evm_address, parse_account_key

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def _account_key(text: str) -> AccountKey:
    return parse_account_key(text)


def _wallet_scope(network: Network) -> tuple[str, list[Any]]:
    """The SQL condition (on alias `w`) picking the merchant's active wallet for a network: the one EVM
    wallet serves every EVM network; a Bitcoin-family wallet serves one."""
    if network.chain == "evm":
        return "w.chain = %s AND w.is_active AND w.network_id IS NULL", [network.chain]
    return "w.chain = %s AND w.is_active AND w.network_id = %s", [network.chain, network.pk]


def claim_cte(
    name: str, *, merchant_id: str, network_asset: NetworkAsset, now: datetime, condition: str = "TRUE"
) -> tuple[str, list[Any]]:
    """`name AS (UPDATE ... RETURNING id, wallet_id, derivation_index, address, display_address)`: the
    lowest free address of the merchant's pool for the network that this transaction can lock, marked
    claimed at `now`, if `condition` (SQL, whose parameters follow those returned) holds. No row when
    the pool has none. (`display_address` is empty for an address derived before that column existed.)"""
    scope, scope_params = _wallet_scope(network_asset.network)
    # The wallet is a scalar subquery (one active wallet per merchant, chain and network), not a join:
    # with a join the planner cannot know the rows come in derivation order, and sorted the whole free
    # pool (1,000 rows by default) for every claim. This way the claim reads the pool's index from its
    # lowest free entry and stops at the first it can lock.
    sql = f"""{name} AS (
            UPDATE payments_paymentaddress SET claimed_at = %s
            WHERE id = (
                SELECT a.id FROM payments_paymentaddress a
                WHERE a.wallet_id = (SELECT w.id FROM payments_wallet w WHERE w.merchant_id = %s AND {scope})
                    AND a.claimed_at IS NULL
                ORDER BY a.derivation_index LIMIT 1
                FOR UPDATE SKIP LOCKED)
                AND {condition}
            RETURNING id, wallet_id, derivation_index, address, display_address)"""
    return sql, [now, merchant_id, *scope_params]


def tiers_sql(merchant_id: str, network_asset: NetworkAsset) -> tuple[str, list[Any]]:
    """The merchant's confirmation tiers for the asset as JSON text, `[[min_amount_text, confirmations],
    ...]` in a fixed order, `[]` for none: equal texts are equal tiers."""
    return (
        "(SELECT COALESCE(json_agg(json_build_array(r.min_amount_base_units::text, r.confirmations) "
        "ORDER BY r.min_amount_base_units, r.confirmations)::text, '[]') FROM payments_confirmationrule r "
        "WHERE r.merchant_id = %s AND r.network_asset_id = %s)",
        [merchant_id, network_asset.pk],
    )


def tiers_parse(text: str) -> list[tuple[int, int]]:
    """`tiers_sql`'s text as (min_amount_base_units, confirmations) pairs."""
    return [(int(amount), int(confirmations)) for amount, confirmations in json.loads(text)]


def claim_statement(*, merchant_id: str, network_asset: NetworkAsset, now: datetime) -> tuple[str, list[Any]]:
    """The claim's statement and parameters (see `address_claim`): one row of (address id, wallet id,
    derivation index, address, the wallet's next index, the confirmation tiers as `tiers_sql` text),
    the address columns NULL when the pool has no free address this transaction can lock."""
    claim, claim_params = claim_cte("claimed", merchant_id=merchant_id, network_asset=network_asset, now=now)
    tiers, tiers_params = tiers_sql(merchant_id, network_asset)
    sql = f"""
        WITH {claim}
        SELECT c.id, c.wallet_id, c.derivation_index, c.address,
            (SELECT next_index FROM payments_wallet WHERE id = c.wallet_id), {tiers}
        FROM (SELECT 1) AS one LEFT JOIN claimed c ON TRUE
    """
    return sql, [*claim_params, *tiers_params]


def address_claim(
    *, merchant_id: str, network_asset: NetworkAsset, now: datetime
) -> tuple[PaymentAddress, list[tuple[int, int]]]:
    """Claim the lowest free address of the merchant's wallet pool for this network, and read the
    merchant's confirmation tiers for the asset, in one statement. Free addresses locked by another
    create are skipped (`SKIP LOCKED`), so creates do not wait on each other; the claim is undone if
    the create rolls back. A low pool is topped up by the first create that sees it low; an empty
    one is refilled before claiming."""
    sql, params = claim_statement(merchant_id=merchant_id, network_asset=network_asset, now=now)
    for attempt in range(3):  # the third claim is sure: it follows our own refill, invisible to others
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            address_id, wallet_id, index, address, next_index, tiers = cursor.fetchone()
        if address_id is not None:
            if pool_low(index, next_index):
                # Top the pool up before it runs dry, unless another create is doing it right now.
                address_pool_refill(
                    merchant_id=merchant_id, network=network_asset.network, now=now, skip_if_busy=True
                )
            return (
                PaymentAddress(
                    pk=address_id,
                    wallet_id=wallet_id,
                    derivation_index=index,
                    address=address,
                    claimed_at=now,
                ),
                tiers_parse(tiers),
            )
        # Many creates can find the pool empty at once: the first refills it, the others wait for its
        # commit on the wallet row and then claim from its batch instead of deriving one each.
        if attempt < 2:
            address_pool_refill(
                merchant_id=merchant_id, network=network_asset.network, now=now, only_if_empty=attempt == 0
            )
    raise Conflict("could not claim an address; try again", code="address_pool_exhausted")


def pool_low(claimed_index: int, next_index: int) -> bool:
    """Whether a pool is due a top-up after its address `claimed_index` was claimed (at most half a batch
    left beyond it)."""
    return next_index - claimed_index <= max(1, settings.GATEWAY_ADDRESS_POOL_BATCH // 2)


def address_pool_refill(
    *,
    merchant_id: str,
    network: Network,
    now: datetime,
    batch: int | None = None,
    only_if_empty: bool = False,
    skip_if_busy: bool = False,
    only_from: int | None = None,
) -> int:
    """Derive the next `batch` addresses of the merchant's wallet for a network into its pool, under the
    wallet's row lock (held to the end of the transaction, so two refills never derive one index; `NO
    KEY UPDATE`, so the foreign-key checks of concurrent creates referencing the wallet do not wait).
    With `only_if_empty`, derive nothing if the pool has a free address (first giving any free address
    derived without its shown form, by the version before an upgrade, that form: a create claims only
    addresses that have it); with `skip_if_busy`, nothing if another transaction holds the wallet; with
    `only_from`, nothing if the pool no longer ends there (a refill since the caller looked extended it).
    Inside a caller's transaction, a savepoint: a refill that fails leaves that transaction usable.
    Returns how many were derived. Public keys only: nothing here can spend.

    The lock comes first, the derivation after (unlike the beat's top-up, which derives a whole pool): the
    creates that find the pool empty need this batch and wait for it either way, and a refill that derived
    before locking had every create racing it derive a batch of its own, all but one thrown away. With
    each key's chain node kept (`wallets._chain_node`), a batch of 50 EVM addresses takes about 4.5 ms."""
    batch = max(1, batch or settings.GATEWAY_ADDRESS_POOL_BATCH)
    scope, scope_params = _wallet_scope(network)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT w.id, w.next_index, w.account_key FROM payments_wallet w "
            f"WHERE w.merchant_id = %s AND {scope} FOR NO KEY UPDATE{' SKIP LOCKED' if skip_if_busy else ''}",
            [merchant_id, *scope_params],
        )
        row = cursor.fetchone()
        if row is None and skip_if_busy:
            return 0
        if row is None:
            raise InvalidRequest(
                f"the merchant has no {network.chain} wallet for {network.code}; add one with add_wallet",
                code="no_wallet_for_network",
                param="network",
            )
        wallet_id, first, account_key = row
        if only_from is not None and first != only_from:
            return 0
        if only_if_empty:
            _fill_shown(cursor, wallet_id, network.chain)
            # A new statement, so a new snapshot: it sees the batch of a refill we waited for.
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM payments_paymentaddress WHERE wallet_id = %s AND claimed_at IS NULL)",
                [wallet_id],
            )
            if cursor.fetchone()[0]:
                return 0
        addresses = _derive(account_key, network.chain, network.bech32_hrp or "", first, batch)
        _pool_insert(cursor, wallet_id, first, addresses, now)
    return batch


def address_pools_top_up(*, now: datetime, size: int | None = None) -> int:
    """Bring every active wallet whose pool is below half of `size` free addresses back to `size` (the
    beat task), so that creates claim and rarely derive. Returns how many addresses were derived.

    The addresses are derived in batches of GATEWAY_ADDRESS_POOL_BATCH, each before the wallet's row
    is locked, and written in a short transaction of its own, which holds the lock only to insert
    them (and derives again if a create extended the pool meanwhile). A create that finds the pool
    empty waits for that lock: it once waited while the task derived hundreds of addresses under it
    (a stall of every create of the merchant, hundreds of milliseconds, each time the pool ran dry)."""
    size = size or settings.GATEWAY_ADDRESS_POOL_SIZE
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT w.id FROM payments_wallet w WHERE w.is_active AND (SELECT count(*) FROM "
            "payments_paymentaddress a WHERE a.wallet_id = w.id AND a.claimed_at IS NULL) < %s ORDER BY w.id",
            [max(1, size // 2)],
        )
        low = [wallet_id for (wallet_id,) in cursor.fetchall()]
    derived = sum(_wallet_top_up(wallet_id, size, now) for wallet_id in low)
    if derived:
        logger.info("address pools topped up: %d addresses derived for %d wallets", derived, len(low))
    return derived


def _wallet_top_up(wallet_id: int, size: int, now: datetime) -> int:
    derived = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT w.next_index, w.account_key, w.chain, n.bech32_hrp, (SELECT count(*) FROM "
                "payments_paymentaddress a WHERE a.wallet_id = w.id AND a.claimed_at IS NULL) "
                "FROM payments_wallet w LEFT JOIN payments_network n ON n.id = w.network_id "
                "WHERE w.id = %s AND w.is_active",
                [wallet_id],
            )
            row = cursor.fetchone()
        if row is None or row[4] >= size:
            return derived
        first, account_key, chain, hrp, free = row
        count = min(size - free, max(1, settings.GATEWAY_ADDRESS_POOL_BATCH))
        addresses = _derive(account_key, chain, hrp or "", first, count)  # no lock held
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT w.next_index FROM payments_wallet w WHERE w.id = %s AND w.is_active "
                "FOR NO KEY UPDATE SKIP LOCKED",
                [wallet_id],
            )
            locked = cursor.fetchone()
            if locked is None:
                return derived  # deactivated, or a create is refilling it right now
            if locked[0] != first:
                continue  # a create extended the pool meanwhile: derive from its new end
            _pool_insert(cursor, wallet_id, first, addresses, now)
        derived += count


def _derive(account_key: str, chain: str, hrp: str, first: int, count: int) -> list[tuple[str, str]]:
    """The addresses of indexes first .. first+count-1, each as stored (EVM: lower case) and as a payer
    is shown it (EVM: EIP-55 checksummed). Public keys only."""
    key = _account_key(account_key)
    if chain == "evm":
        shown = [derive_evm_address(key, index) for index in range(first, first + count)]
        return [(address.lower(), address) for address in shown]
    return [(a, a) for a in (derive_bech32_address(key, index, hrp) for index in range(first, first + count))]


def _fill_shown(cursor, wallet_id: int, chain: str) -> int:
    """Give the wallet's free addresses that have no shown form (derived by the version before an
    upgrade, after its migration) that form, in id order like migration 0028 (two of them never wait on
    each other's rows in a cycle). Returns how many there were."""
    cursor.execute(
        "SELECT id, address FROM payments_paymentaddress "
        "WHERE wallet_id = %s AND claimed_at IS NULL AND display_address = '' ORDER BY id",
        [wallet_id],
    )
    rows = cursor.fetchall()
    if rows:
        cursor.execute(
            "UPDATE payments_paymentaddress a SET display_address = u.d "
            "FROM unnest(%s::bigint[], %s::text[]) AS u(id, d) WHERE a.id = u.id AND a.claimed_at IS NULL",
            [[row_id for row_id, _ in rows], [shown_address(chain, address) for _, address in rows]],
        )
    return len(rows)


def _pool_insert(cursor, wallet_id: int, first: int, addresses: list[tuple[str, str]], now: datetime) -> None:
    """Write derived addresses (as `_derive` gives them) from index `first` into the pool and move
    `next_index` past them (the caller holds the wallet's row lock and has checked `next_index` is
    still `first`)."""
    indexes = list(range(first, first + len(addresses)))
    cursor.execute(
        "INSERT INTO payments_paymentaddress (wallet_id, derivation_index, address, display_address, "
        "created_at) SELECT %s, i, a, d, %s FROM unnest(%s::integer[], %s::text[], %s::text[]) AS u(i, a, d)",
        [wallet_id, now, indexes, [a for a, _ in addresses], [d for _, d in addresses]],
    )
    cursor.execute(
        "UPDATE payments_wallet SET next_index = %s WHERE id = %s", [first + len(addresses), wallet_id]
    )

"""The only code that writes intents, observations, transitions and events.

Every state change goes through `payment_settle`: lock the intent, evaluate its evidence, apply the
verdict through the FSM, and write the transition (unique on its cause) and the event (the outbox) in
the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from . import policy
from .chains.base import Transfer
from .errors import Conflict, InvalidRequest, NotFound
from .models import (
    Asset,
    ChainObservation,
    ChainTip,
    Event,
    Merchant,
    Network,
    NetworkAsset,
    PaymentAddress,
    PaymentIntent,
    PaymentState,
    Quote,
    StateTransition,
)
from .pricing import (
    FIAT_CURRENCIES,
    FixedRateSource,
    HttpTickerRateSource,
    PegRateSource,
    RateSource,
    display_places,
    quote,
    to_base_units,
)
from .selectors import (
    INTENT_RELATED,
    intent_evidence,
    intent_facts,
    intent_representation,
    payment_options,
    transactions_representation,
)
from .wallets import AccountKey, derive_bech32_address, derive_evm_address, parse_account_key

logger = logging.getLogger(__name__)


# --- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentInput:
    """A validated create request (the API layer has checked shapes and sizes)."""

    price_amount: Decimal
    price_currency: str
    network_asset: NetworkAsset | None = None
    merchant_order_id: str = ""
    customer_id: str = ""
    expires_in_minutes: int | None = None
    success_url: str = ""
    cancel_url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


# --- reference data ---------------------------------------------------------------------------------


# Reference data changes rarely (in the admin); a per-process cache with a short lifetime saves a query
# on every create, and an admin edit takes effect within REFERENCE_CACHE_S.
REFERENCE_CACHE_S = 30.0
_reference_cache: dict[tuple, tuple[float, Any]] = {}


def _cached(key: tuple, load):
    hit = _reference_cache.get(key)
    clock = time.monotonic()
    if hit is not None and clock - hit[0] < REFERENCE_CACHE_S:
        return hit[1]
    value = load()
    _reference_cache[key] = (clock, value)
    return value


def reference_cache_clear() -> None:
    _reference_cache.clear()


def network_asset_resolve(*, asset_code: str, network_code: str) -> NetworkAsset:
    """The enabled asset on an enabled network that has a node (is watched), or an error with a stable code
    saying which part is wrong."""
    na = _cached(
        ("network_asset", asset_code, network_code), lambda: _network_asset_load(asset_code, network_code)
    )
    if na is not None and na.enabled and na.network.watched:
        return na
    reference_cache_clear()  # an error answer is never served from a stale cache
    na = _network_asset_load(asset_code, network_code)
    if na is not None and na.enabled and na.network.watched:
        return na
    network = na.network if na else Network.objects.filter(code=network_code).first()
    if network is None:
        raise InvalidRequest(f"unknown network {network_code!r}", code="unknown_network", param="network")
    if not network.enabled:
        raise InvalidRequest(f"network {network_code} is disabled", code="network_disabled", param="network")
    if not network.watched:
        # No node: payments on it would never be seen.
        raise InvalidRequest(
            f"network {network_code} is not watched by this gateway (no node configured)",
            code="network_not_watched",
            param="network",
        )
    if na is None:
        if not Asset.objects.filter(code=asset_code).exists():
            raise InvalidRequest(f"unknown asset {asset_code!r}", code="unknown_asset", param="asset")
        raise InvalidRequest(
            f"{asset_code} is not available on {network_code}", code="asset_not_on_network", param="asset"
        )
    raise InvalidRequest(f"{na} is disabled", code="asset_disabled", param="asset")


def _network_asset_load(asset_code: str, network_code: str) -> NetworkAsset | None:
    return (
        NetworkAsset.objects.select_related("asset", "network")
        .filter(network__code=network_code, asset__code=asset_code)
        .first()
    )


def default_rate_source() -> RateSource:
    pegs = _cached(
        ("pegs",), lambda: dict(Asset.objects.exclude(peg_currency="").values_list("code", "peg_currency"))
    )
    if settings.GATEWAY_RATE_SOURCE == "fixed":
        fallback: RateSource = FixedRateSource.parse(settings.GATEWAY_FIXED_RATES)
    else:
        fallback = HttpTickerRateSource(
            settings.GATEWAY_RATE_SOURCE_URL, timeout_s=settings.GATEWAY_RATE_SOURCE_TIMEOUT_S
        )
    return PegRateSource(pegs, fallback)


# --- intents ----------------------------------------------------------------------------------------


def payment_intent_create(
    *, merchant: Merchant, data: IntentInput, now: datetime, rate_source: RateSource | None = None
) -> PaymentIntent:
    """Create an intent; if the asset is chosen, assign address and quote at once (-> awaiting_payment).

    A new intent has no evidence yet, so its first verdict is evaluated from empty evidence without
    reading any (the same pure `evaluate` that settles every later change), and the intent, its
    transition and its two events are written with one statement each."""
    price_validate(price=data.price_amount, currency=data.price_currency, network_asset=data.network_asset)
    expiry = data.expires_in_minutes or merchant.expiry_minutes
    with transaction.atomic(savepoint=False):
        intent = PaymentIntent(
            merchant=merchant,
            merchant_order_id=data.merchant_order_id,
            customer_id=data.customer_id,
            price_amount=data.price_amount,
            price_currency=data.price_currency,
            expires_at=now + timedelta(minutes=expiry),
            success_url=data.success_url,
            cancel_url=data.cancel_url,
            metadata=data.metadata,
            underpayment_tolerance_bps=merchant.underpayment_tolerance_bps,
            overpayment_tolerance_bps=merchant.overpayment_tolerance_bps,
            late_payment_window_minutes=merchant.late_payment_window_minutes,
        )
        if data.network_asset is None:
            if not payment_options(merchant, data.price_currency):
                # The customer would find nothing to choose on the checkout.
                raise InvalidRequest(
                    f"nothing can pay {data.price_currency} here now: no enabled asset on a watched network "
                    "with a wallet of the merchant",
                    code="no_payment_options",
                    param="currency",
                )
            # inserts the intent
            _events_write(intent=intent, events=[("payment.created", "created", None)], transactions=[])
            return intent
        _assign(intent=intent, network_asset=data.network_asset, now=now, rate_source=rate_source)
        verdict = policy.evaluate(intent_facts(intent), [], [], {}, now)
        intent.transition_method(verdict.state)()
        intent.event_sequence = 2
        intent.created_at = intent.updated_at = now
        transition = StateTransition(
            intent=intent,
            from_state=PaymentState.CREATED,
            to_state=verdict.state,
            cause=hashlib.sha256(f"0:{verdict.fingerprint}".encode()).hexdigest(),
            reason=verdict.reason[:200],
            verdict=verdict.as_dict(),
            created_at=now,
        )
        snapshot = intent_representation(intent, transactions=[])
        created = _event(
            intent, "payment.created", 1, "created", None, snapshot | {"state": PaymentState.CREATED}
        )
        moved = _event(intent, f"payment.{verdict.state}", 2, "", None, snapshot)
        created.created_at = moved.created_at = now
        # Quote, intent, transition and both events in one statement (the foreign keys between them
        # are checked at commit): a fraction of the cost of five ORM inserts.
        parts = []
        if intent.quote is not None:
            parts.append(_insert_cte("q", intent.quote, "id"))
        quote_id = _Sql("(SELECT id FROM q)") if intent.quote is not None else None
        parts.append(_insert_cte("i", intent, quote_id=quote_id))
        parts.append(_insert_cte("t", transition, "id"))
        parts.append(_insert_cte("e1", created))
        parts.append(
            _insert_cte(
                "e2",
                moved,
                transition_id=_Sql("(SELECT id FROM t)"),
                dedupe_key=_Sql("'transition:' || (SELECT id FROM t)"),
            )
        )
        quote_select = "(SELECT id FROM q)" if intent.quote is not None else "NULL"
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH " + ", ".join(sql for sql, _ in parts) + f" SELECT {quote_select}, (SELECT id FROM t)",
                [param for _, params in parts for param in params],
            )
            quote_pk, transition.pk = cursor.fetchone()
        if intent.quote is not None:
            intent.quote.pk = quote_pk
        intent._state.adding = False
        intent.representation = snapshot
    return intent


def payment_intent_select_asset(
    *,
    merchant: Merchant,
    intent_id: str,
    network_asset: NetworkAsset,
    now: datetime,
    rate_source: RateSource | None = None,
) -> PaymentIntent:
    """Choose the asset/network of an intent created without one: `created` -> `awaiting_payment`."""
    with transaction.atomic(savepoint=False):
        intent = _lock_intent(merchant=merchant, intent_id=intent_id)
        if intent.state != PaymentState.CREATED or intent.network_asset_id is not None:
            raise Conflict(
                f"the asset can only be chosen in state created (state is {intent.state})",
                code="intent_asset_already_chosen",
            )
        if now >= intent.expires_at or intent.canceled_at is not None:
            raise Conflict("the intent has expired or was canceled", code="intent_expired")
        price_validate(price=intent.price_amount, currency=intent.price_currency, network_asset=network_asset)
        _assign(intent=intent, network_asset=network_asset, now=now, rate_source=rate_source)
        if intent.quote is not None:
            intent.quote.save()
        payment_settle(intent_id=intent.pk, now=now, locked=intent)
    return intent


def payment_intent_cancel(*, merchant: Merchant, intent_id: str, now: datetime) -> PaymentIntent:
    """Close the payment window now. Only while no funds are seen; later funds are late payments."""
    with transaction.atomic(savepoint=False):
        intent = _lock_intent(merchant=merchant, intent_id=intent_id)
        if intent.state not in (PaymentState.CREATED, PaymentState.AWAITING_PAYMENT):
            raise Conflict(
                f"an intent in state {intent.state} cannot be canceled", code="intent_not_cancelable"
            )
        intent.canceled_at = now  # saved by the settle, which moves the intent to expired
        payment_settle(intent_id=intent.pk, now=now, locked=intent)
    return intent


def price_validate(*, price: Decimal, currency: str, network_asset: NetworkAsset | None) -> None:
    """A price is in a fiat currency, or in the asset itself with no more decimals than it has."""
    if currency in FIAT_CURRENCIES:
        _check_price_precision(price, currency, FIAT_CURRENCIES[currency])
        return
    if network_asset is not None:
        _check_price_fits_asset(price, currency, network_asset)
        return
    decimals = list(NetworkAsset.objects.filter(asset__code=currency).values_list("decimals", flat=True))
    if not decimals:
        raise InvalidRequest(f"unknown currency {currency!r}", code="unknown_currency", param="currency")
    _check_price_precision(price, currency, max(decimals))


def _check_price_precision(price: Decimal, currency: str, decimals: int) -> None:
    with localcontext() as ctx:
        ctx.prec = 100  # the default 28 digits would round a long price before we look at it
        exponent = price.normalize().as_tuple().exponent  # trailing zeros ("49.000") are not precision
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if places > decimals:
        raise InvalidRequest(
            f"{currency} amounts have at most {decimals} decimals", code="amount_too_precise", param="amount"
        )


def _check_price_fits_asset(price: Decimal, currency: str, network_asset: NetworkAsset) -> None:
    if currency in FIAT_CURRENCIES:
        return
    if currency != network_asset.asset.code:
        raise InvalidRequest(
            f"the price is in {currency} but the asset is {network_asset.asset.code}",
            code="currency_asset_mismatch",
            param="currency",
        )
    _check_price_precision(price, currency, network_asset.decimals)


def _lock_intent(*, merchant: Merchant, intent_id: str) -> PaymentIntent:
    intent = (
        PaymentIntent.objects.select_for_update(of=("self",))
        .select_related(*INTENT_RELATED)
        .filter(merchant=merchant, pk=intent_id)
        .first()
    )
    if intent is None:
        raise NotFound(f"no payment intent {intent_id}", code="intent_not_found")
    return intent


def _assign(
    *, intent: PaymentIntent, network_asset: NetworkAsset, now: datetime, rate_source: RateSource | None
) -> None:
    """Claim the intent's address, quote its amount and snapshot the confirmation policy. The address
    claim is written; the quote (`intent.quote`, unsaved) and the intent are the caller's to save."""
    if intent.price_currency in FIAT_CURRENCIES:
        quoted = quote(
            source=rate_source or default_rate_source(),
            price=intent.price_amount,
            currency=intent.price_currency,
            asset=network_asset.asset.code,
            decimals=network_asset.decimals,
            now=now,
            ttl=timedelta(minutes=settings.GATEWAY_QUOTE_TTL_MINUTES),
            display_decimals=network_asset.asset.display_decimals,
        )
        amount = quoted.amount_base_units
        intent.quote = Quote(
            price_amount=intent.price_amount,
            price_currency=intent.price_currency,
            network_asset=network_asset,
            rate=quoted.rate.rate,
            source=quoted.rate.source,
            rate_time=quoted.rate.time,
            quoted_at=now,
            expires_at=quoted.expires_at,
            amount_base_units=amount,
            rounded_to_decimals=display_places(network_asset.decimals, network_asset.asset.display_decimals),
        )
    else:
        amount = to_base_units(intent.price_amount, network_asset.decimals)
    address, tiers = _address_claim(merchant_id=intent.merchant_id, network_asset=network_asset, now=now)
    intent.required_confirmations = policy.required_confirmations_for(
        amount, tiers, network_asset.default_confirmations
    )
    intent.network_asset = network_asset
    intent.amount_due_base_units = amount
    intent.wallet_id = address.wallet_id
    intent.address = address


@lru_cache(maxsize=1024)
def _account_key(text: str) -> AccountKey:
    return parse_account_key(text)


def _wallet_scope(network: Network) -> tuple[str, list[Any]]:
    """The SQL condition (on alias `w`) picking the merchant's active wallet for a network: the one EVM
    wallet serves every EVM network; a Bitcoin-family wallet serves one."""
    if network.chain == "evm":
        return "w.chain = %s AND w.is_active AND w.network_id IS NULL", [network.chain]
    return "w.chain = %s AND w.is_active AND w.network_id = %s", [network.chain, network.pk]


def _address_claim(
    *, merchant_id: str, network_asset: NetworkAsset, now: datetime
) -> tuple[PaymentAddress, list[tuple[int, int]]]:
    """Claim the lowest free address of the merchant's wallet pool for this network, and read the
    merchant's confirmation tiers for the asset, in one statement. Free addresses locked by another
    create are skipped (`SKIP LOCKED`), so creates do not wait on each other; the claim is undone if
    the create rolls back. A low pool is topped up by the first create that sees it low; an empty
    one is refilled before claiming."""
    scope, scope_params = _wallet_scope(network_asset.network)
    sql = f"""
        WITH claimed AS (
            UPDATE payments_paymentaddress SET claimed_at = %s
            WHERE id = (
                SELECT a.id FROM payments_paymentaddress a JOIN payments_wallet w ON w.id = a.wallet_id
                WHERE w.merchant_id = %s AND {scope} AND a.claimed_at IS NULL
                ORDER BY a.derivation_index LIMIT 1
                FOR UPDATE OF a SKIP LOCKED)
            RETURNING id, wallet_id, derivation_index, address)
        SELECT c.id, c.wallet_id, c.derivation_index, c.address,
            (SELECT next_index FROM payments_wallet WHERE id = c.wallet_id),
            (SELECT json_agg(json_build_array(r.min_amount_base_units::text, r.confirmations))
             FROM payments_confirmationrule r WHERE r.merchant_id = %s AND r.network_asset_id = %s)
        FROM (SELECT 1) AS one LEFT JOIN claimed c ON TRUE
    """
    params = [now, merchant_id, *scope_params, merchant_id, network_asset.pk]
    for attempt in range(3):  # the third claim is sure: it follows our own refill, invisible to others
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            address_id, wallet_id, index, address, next_index, tiers = cursor.fetchone()
        if address_id is not None:
            if next_index - index <= settings.GATEWAY_ADDRESS_POOL_BATCH // 2:
                # Top the pool up before it runs dry, unless another create is doing it right now.
                address_pool_refill(
                    merchant_id=merchant_id, network=network_asset.network, now=now, skip_if_busy=True
                )
            # psycopg decodes json itself: a list of [min_amount_text, confirmations] pairs, or NULL.
            tiers = [(int(amount), confirmations) for amount, confirmations in tiers or ()]
            return (
                PaymentAddress(
                    pk=address_id,
                    wallet_id=wallet_id,
                    derivation_index=index,
                    address=address,
                    claimed_at=now,
                ),
                tiers,
            )
        # Many creates can find the pool empty at once: the first refills it, the others wait for its
        # commit on the wallet row and then claim from its batch instead of deriving one each.
        if attempt < 2:
            address_pool_refill(
                merchant_id=merchant_id, network=network_asset.network, now=now, only_if_empty=attempt == 0
            )
    raise Conflict("could not claim an address; try again", code="address_pool_exhausted")


def address_pool_refill(
    *,
    merchant_id: str,
    network: Network,
    now: datetime,
    batch: int | None = None,
    only_if_empty: bool = False,
    skip_if_busy: bool = False,
) -> int:
    """Derive the next `batch` addresses of the merchant's wallet for a network into its pool, under the
    wallet's row lock (held to the end of the transaction, so two refills never derive one index; `NO
    KEY UPDATE`, so the foreign-key checks of concurrent creates referencing the wallet do not wait).
    With `only_if_empty`, derive nothing if the pool has a free address; with `skip_if_busy`, nothing
    if another transaction holds the wallet. Returns how many were derived. Public keys only:
    nothing here can spend."""
    batch = batch or settings.GATEWAY_ADDRESS_POOL_BATCH
    scope, scope_params = _wallet_scope(network)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
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
        if only_if_empty:
            # A new statement, so a new snapshot: it sees the batch of a refill we waited for.
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM payments_paymentaddress WHERE wallet_id = %s AND claimed_at IS NULL)",
                [wallet_id],
            )
            if cursor.fetchone()[0]:
                return 0
        _pool_extend(cursor, wallet_id, first, account_key, network.chain, network.bech32_hrp, batch, now)
    return batch


def address_pools_top_up(*, now: datetime, size: int | None = None) -> int:
    """Bring every active wallet whose pool is below half of `size` free addresses back to `size` (the
    beat task), so that creates claim and rarely derive. A wallet being refilled by a create is
    skipped. Returns how many addresses were derived."""
    size = size or settings.GATEWAY_ADDRESS_POOL_SIZE
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT w.id FROM payments_wallet w WHERE w.is_active AND (SELECT count(*) FROM "
            "payments_paymentaddress a WHERE a.wallet_id = w.id AND a.claimed_at IS NULL) < %s ORDER BY w.id",
            [max(1, size // 2)],
        )
        low = [wallet_id for (wallet_id,) in cursor.fetchall()]
    derived = 0
    for wallet_id in low:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT w.next_index, w.account_key, w.chain, n.bech32_hrp FROM payments_wallet w "
                "LEFT JOIN payments_network n ON n.id = w.network_id "
                "WHERE w.id = %s AND w.is_active FOR NO KEY UPDATE OF w SKIP LOCKED",
                [wallet_id],
            )
            row = cursor.fetchone()
            if row is None:
                continue
            first, account_key, chain, hrp = row
            cursor.execute(
                "SELECT count(*) FROM payments_paymentaddress WHERE wallet_id = %s AND claimed_at IS NULL",
                [wallet_id],
            )
            missing = size - cursor.fetchone()[0]
            if missing > 0:
                _pool_extend(cursor, wallet_id, first, account_key, chain, hrp or "", missing, now)
                derived += missing
    if derived:
        logger.info("address pools topped up: %d addresses derived for %d wallets", derived, len(low))
    return derived


def _pool_extend(
    cursor, wallet_id: int, first: int, account_key: str, chain: str, hrp: str, count: int, now: datetime
) -> None:
    """Derive indexes first .. first+count-1 into the pool and move `next_index` past them (the caller
    holds the wallet's row lock)."""
    key = _account_key(account_key)
    indexes = list(range(first, first + count))
    if chain == "evm":
        addresses = [derive_evm_address(key, index).lower() for index in indexes]
    else:
        addresses = [derive_bech32_address(key, index, hrp) for index in indexes]
    cursor.execute(
        "INSERT INTO payments_paymentaddress (wallet_id, derivation_index, address, created_at) "
        "SELECT %s, i, a, %s FROM unnest(%s::integer[], %s::text[]) AS u(i, a)",
        [wallet_id, now, indexes, addresses],
    )
    cursor.execute("UPDATE payments_wallet SET next_index = %s WHERE id = %s", [first + count, wallet_id])


# --- one-statement inserts (the create fast path) ---------------------------------------------------


class _Sql(str):
    """A column value written as SQL, e.g. a reference to a row inserted earlier in the same statement."""


def _column_values(obj: Any, **overrides: Any) -> dict[str, Any]:
    """An unsaved model instance as {column: database value}, the way the ORM would insert it (an
    unset auto primary key is left to the database). Defaults were applied when it was built;
    `auto_now` fields are the caller's to set."""
    values = {}
    for f in obj._meta.concrete_fields:
        value = getattr(obj, f.attname)
        if f.primary_key and value is None:
            continue
        values[f.column] = f.get_db_prep_save(value, connection)
    values.update(overrides)
    return values


def _insert_cte(name: str, obj: Any, returning: str = "", **overrides: Any) -> tuple[str, list[Any]]:
    """`name AS (INSERT INTO <table> ... [RETURNING ...])` for one row, with its parameters."""
    values = _column_values(obj, **overrides)
    marks, params = [], []
    for value in values.values():
        if isinstance(value, _Sql):
            marks.append(value)
        else:
            marks.append("%s")
            params.append(value)
    columns = ", ".join(connection.ops.quote_name(column) for column in values)
    tail = f" RETURNING {returning}" if returning else ""
    return (
        f"{name} AS (INSERT INTO {obj._meta.db_table} ({columns}) VALUES ({', '.join(marks)}){tail})",
        params,
    )


# --- evidence ---------------------------------------------------------------------------------------


def observation_record(*, transfer: Transfer, now: datetime) -> ChainObservation | None:
    """Record what a chain showed and settle the intent it pays. Recording the same transfer again
    changes nothing; a transfer now in a block updates its block fields; a transfer seen unconfirmed
    again after its block was reorged out is canonical again, unconfirmed. Returns None for a transfer
    to an address the gateway never derived."""
    network = Network.objects.get(code=transfer.network_code)
    address = transfer.address.lower() if network.chain == "evm" else transfer.address
    paid_to = PaymentAddress.objects.filter(address=address).values_list("intent__pk", flat=True).first()
    if paid_to is None:
        return None
    token = transfer.token_contract.lower()
    network_asset = (
        NetworkAsset.objects.filter(network=network, contract_address__iexact=token).first()
        if token
        else NetworkAsset.objects.filter(network=network, contract_address="").first()
    )
    if transfer.block_height is None and transfer.seen_unconfirmed_at is None:
        transfer = _with_seen_at(transfer, now)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO payments_chainobservation AS o
                    (network_id, tx_hash, output_index, address, network_asset_id, token_contract,
                     amount_base_units, block_height, block_hash, block_time, position_in_block,
                     seen_unconfirmed_at, canonical, intent_id, recorded_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, TRUE, %s, %s, %s)
                ON CONFLICT (network_id, tx_hash, output_index) DO UPDATE SET
                    block_height = CASE WHEN EXCLUDED.block_height IS NOT NULL THEN EXCLUDED.block_height
                                        WHEN o.canonical THEN o.block_height END,
                    block_hash = CASE WHEN EXCLUDED.block_height IS NOT NULL THEN EXCLUDED.block_hash
                                      WHEN o.canonical THEN o.block_hash ELSE '' END,
                    block_time = CASE WHEN EXCLUDED.block_height IS NOT NULL THEN EXCLUDED.block_time
                                      WHEN o.canonical THEN o.block_time END,
                    position_in_block = CASE WHEN EXCLUDED.block_height IS NOT NULL
                                             THEN EXCLUDED.position_in_block
                                             WHEN o.canonical THEN o.position_in_block END,
                    seen_unconfirmed_at = LEAST(o.seen_unconfirmed_at, EXCLUDED.seen_unconfirmed_at),
                    canonical = TRUE,
                    updated_at = EXCLUDED.updated_at
                RETURNING id
                """,
                [
                    network.pk,
                    transfer.tx_hash,
                    transfer.output_index,
                    address,
                    network_asset.pk if network_asset else None,
                    token,
                    transfer.amount_base_units,
                    transfer.block_height,
                    transfer.block_hash,
                    transfer.block_time,
                    transfer.position_in_block,
                    transfer.seen_unconfirmed_at,
                    paid_to,
                    now,
                    now,
                ],
            )
            (observation_id,) = cursor.fetchone()
        payment_settle(intent_id=paid_to, now=now)
    return ChainObservation.objects.get(pk=observation_id)


def _with_seen_at(transfer: Transfer, now: datetime) -> Transfer:
    from dataclasses import replace

    return replace(transfer, seen_unconfirmed_at=now)


def observations_set_canonical(*, observation_ids: list[int], canonical: bool, now: datetime) -> None:
    """Mark observations (non-)canonical, e.g. when a reorg drops their block, and re-settle their intents."""
    with transaction.atomic():
        intent_ids = set(
            ChainObservation.objects.filter(pk__in=observation_ids, intent__isnull=False).values_list(
                "intent_id", flat=True
            )
        )
        ChainObservation.objects.filter(pk__in=observation_ids).update(canonical=canonical, updated_at=now)
        for intent_id in sorted(intent_ids):  # a fixed lock order: no deadlock between two callers
            payment_settle(intent_id=intent_id, now=now)


def chain_tip_record(*, network_code: str, height: int, block_hash: str, now: datetime) -> int:
    """Store a network's tip and re-settle the payments waiting on confirmations there. Returns how many."""
    network = Network.objects.get(code=network_code)
    with transaction.atomic():
        ChainTip.objects.update_or_create(
            network=network, defaults={"height": height, "block_hash": block_hash}
        )
        waiting = list(
            PaymentIntent.objects.filter(
                network_asset__network=network, state__in=[PaymentState.DETECTED, PaymentState.CONFIRMING]
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    for intent_id in waiting:
        payment_settle(intent_id=intent_id, now=now)
    return len(waiting)


def expire_due_intents(*, now: datetime, batch: int = 500) -> int:
    """Settle unpaid intents whose window has closed (created/awaiting_payment -> expired)."""
    due = list(
        PaymentIntent.objects.filter(
            state__in=[PaymentState.CREATED, PaymentState.AWAITING_PAYMENT], expires_at__lte=now
        )
        .order_by("expires_at")
        .values_list("pk", flat=True)[:batch]
    )
    for intent_id in due:
        payment_settle(intent_id=intent_id, now=now)
    return len(due)


# --- settling state ---------------------------------------------------------------------------------


def payment_settle(
    *, intent_id: str, now: datetime, locked: PaymentIntent | None = None
) -> list[StateTransition]:
    """Bring the intent's state in line with its evidence. Idempotent: with no new evidence it writes
    nothing. Runs under the intent's row lock, so concurrent settles of one intent serialise."""
    with transaction.atomic(savepoint=False):
        intent = locked or (
            PaymentIntent.objects.select_for_update(of=("self",))
            .select_related(*INTENT_RELATED)
            .get(pk=intent_id)
        )
        facts, observations, resolutions, tips = intent_evidence(intent)
        verdict = policy.evaluate(facts, observations, resolutions, tips, now)
        cached = (intent.amount_seen_base_units, intent.amount_confirmed_base_units, intent.flags)
        intent.amount_seen_base_units = verdict.amount_seen
        intent.amount_confirmed_base_units = verdict.amount_confirmed
        intent.flags = list(verdict.flags)
        events: list[tuple[str, str, StateTransition | None]] = []  # (type, dedupe key, transition)
        transitions: list[StateTransition] = []
        from_state = intent.state
        if verdict.state != from_state:
            previous = intent.transitions.order_by("-id").values_list("id", flat=True).first() or 0
            intent.transition_method(verdict.state)()
            transition = StateTransition.objects.create(
                intent=intent,
                from_state=from_state,
                to_state=verdict.state,
                cause=hashlib.sha256(f"{previous}:{verdict.fingerprint}".encode()).hexdigest(),
                reason=verdict.reason[:200],
                verdict=verdict.as_dict(),
            )
            transitions.append(transition)
            events.append((f"payment.{verdict.state}", f"transition:{transition.pk}", transition))
        events += _exception_events_due(intent=intent, verdict=verdict)
        changed = (intent.amount_seen_base_units, intent.amount_confirmed_base_units, intent.flags) != cached
        if events or transitions or changed:
            transactions = transactions_representation(intent, observations, tips)
            _events_write(intent=intent, events=events, transactions=transactions)
    return transitions


def _exception_events_due(*, intent: PaymentIntent, verdict: policy.Verdict) -> list[tuple[str, str, None]]:
    """One event per exceptional observation (late, duplicate, wrong asset/network), once."""
    wanted = {f"{kind}:{'/'.join(map(str, key))}": kind for kind, key in verdict.exceptions}
    if not wanted:
        return []
    existing = set(intent.events.filter(dedupe_key__in=list(wanted)).values_list("dedupe_key", flat=True))
    return [
        (f"payment.{kind}_detected", dedupe_key, None)
        for dedupe_key, kind in sorted(wanted.items())
        if dedupe_key not in existing
    ]


def _events_write(
    *,
    intent: PaymentIntent,
    events: list[tuple[str, str, StateTransition | None]],
    transactions: list[dict[str, Any]],
) -> None:
    """Save the intent and append its events to the outbox, each with the next per-payment sequence
    number and the payment's snapshot (the unique (intent, sequence) and (intent, dedupe key)
    constraints are the backstop against a double write)."""
    first = intent.event_sequence + 1
    intent.event_sequence += len(events)
    intent.save()
    snapshot = intent_representation(intent, transactions)
    intent.representation = snapshot
    Event.objects.bulk_create(
        [
            _event(intent, type, first + offset, dedupe_key, transition, snapshot)
            for offset, (type, dedupe_key, transition) in enumerate(events)
        ]
    )


def _event(
    intent: PaymentIntent,
    type: str,
    sequence: int,
    dedupe_key: str,
    transition: StateTransition | None,
    snapshot: dict[str, Any],
) -> Event:
    return Event(
        merchant_id=intent.merchant_id,
        intent=intent,
        type=type,
        sequence=sequence,
        dedupe_key=dedupe_key,
        transition=transition,
        payload=snapshot | {"sequence": sequence},
    )

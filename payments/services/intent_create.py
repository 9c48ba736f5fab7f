"""Creating an intent. With its asset chosen, one statement claims the address and writes the quote, the
intent, its transition, its two events and the API's idempotency record, as its own transaction.

That statement is the whole create on the database: no BEGIN, no COMMIT, no separate claim (each a round
trip of its own, a fifth of a create's cost once). What Python computes from the database's state is
checked by the statement itself:

- the merchant's confirmation tiers for the asset (which set the confirmations required) are the ones
  this process last read, kept by merchant and asset; if the database has others, the statement writes
  nothing, returns them, and the create is computed again with them;
- the address is unknown until the statement claims it, so the snapshot leaves it open (its `address`,
  and the address in its `payment_uri`, `selectors.ADDRESS_SLOT`) and the statement fills it in from the
  pool's `display_address`, as Python then does in the answer;
- a pool with no free address (or none the statement could lock) writes nothing either: the pool is
  refilled and the create runs again. So does a lowest free address without its shown form (derived by
  the version before an upgrade): the refill gives the pool's free addresses that form first;
- an Idempotency-Key already taken fails the statement on the record's unique index, so nothing is
  written, the claim included.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from django.db import connection, transaction
from psycopg.types.json import Jsonb

from .. import policy
from ..errors import Conflict, InvalidRequest
from ..models import (
    Event,
    Merchant,
    NetworkAsset,
    PaymentAddress,
    PaymentIntent,
    PaymentState,
    StateTransition,
)
from ..pricing import RateSource
from ..selectors import (
    ADDRESS_SLOT,
    intent_facts,
    intent_representation,
    payment_options,
    payment_uri_template,
)
from .addresses import address_pool_refill, claim_cte, pool_low, tiers_parse, tiers_sql
from .events import event_values, events_write
from .intents import price, price_validate
from .rows import Sql, insert_cte, insert_values_cte

logger = logging.getLogger(__name__)

CREATE_ROUNDS = 8


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


class RowBesideIntent(Protocol):
    """One more row a create writes with the intent, made from its representation (the API's
    idempotency record with the response): `insert_sql` gives an `INSERT ... SELECT ... WHERE condition
    RETURNING id` and its parameters (`representation_sql` is an SQL expression with the representation
    as jsonb, `condition` an SQL condition), which fails with an IntegrityError if the row is taken;
    `inserted` is told the id written."""

    def insert_sql(
        self, representation: dict[str, Any], representation_sql: str, condition: str = "TRUE"
    ) -> tuple[str, list[Any]]: ...

    def inserted(self, row_id: int) -> None: ...


def payment_intent_create(
    *,
    merchant: Merchant,
    data: IntentInput,
    now: datetime,
    rate_source: RateSource | None = None,
    beside: RowBesideIntent | None = None,
) -> PaymentIntent:
    """Create an intent; if the asset is chosen, assign address and quote at once (-> awaiting_payment),
    in one statement (see above). Without an asset, the intent, its event and `beside` are written in
    one transaction. Either way, nothing is written if any of it fails.

    A new intent has no evidence yet, so its first verdict is evaluated from empty evidence without
    reading any (the same pure `evaluate` that settles every later change)."""
    price_validate(price=data.price_amount, currency=data.price_currency, network_asset=data.network_asset)
    if data.network_asset is None:
        return _create_without_asset(merchant, data, now, beside)
    priced = price(
        price_amount=data.price_amount,
        price_currency=data.price_currency,
        network_asset=data.network_asset,
        now=now,
        rate_source=rate_source,
    )
    key = (merchant.pk, data.network_asset.pk)
    # Another round when the tiers changed under us (rare), or when the pool had no free address this
    # statement could lock: then it is refilled, if still empty, and the claim tried again. Many creates
    # can find the pool empty at once: the first refills it, the others wait for its commit on the
    # wallet row and claim from its batch instead of deriving one each. A refill is visible to every
    # create at once, so a claim after it may still lose the race: a few rounds, then a 409.
    for _ in range(CREATE_ROUNDS):
        tiers = _TIERS.get(key)
        if tiers is None:
            tiers = _tiers_read(key, merchant.pk, data.network_asset)
        intent = _new_intent(merchant, data, now)
        intent.network_asset = data.network_asset
        intent.amount_due_base_units = priced.amount
        intent.quote = priced.quote
        intent.required_confirmations = policy.required_confirmations_for(
            priced.amount, tiers_parse(tiers), data.network_asset.default_confirmations
        )
        if _write_with_address(intent, now, beside, tiers):
            return intent
        if _TIERS.get(key) != tiers:
            continue  # the statement found other tiers: compute the create again with them
        address_pool_refill(
            merchant_id=merchant.pk, network=data.network_asset.network, now=now, only_if_empty=True
        )
    raise Conflict("could not claim an address; try again", code="address_pool_exhausted")


def _new_intent(merchant: Merchant, data: IntentInput, now: datetime) -> PaymentIntent:
    return PaymentIntent(
        merchant=merchant,
        merchant_order_id=data.merchant_order_id,
        customer_id=data.customer_id,
        price_amount=data.price_amount,
        price_currency=data.price_currency,
        expires_at=now + timedelta(minutes=data.expires_in_minutes or merchant.expiry_minutes),
        success_url=data.success_url,
        cancel_url=data.cancel_url,
        metadata=data.metadata,
        underpayment_tolerance_bps=merchant.underpayment_tolerance_bps,
        overpayment_tolerance_bps=merchant.overpayment_tolerance_bps,
        late_payment_window_minutes=merchant.late_payment_window_minutes,
    )


def _create_without_asset(
    merchant: Merchant, data: IntentInput, now: datetime, beside: RowBesideIntent | None
) -> PaymentIntent:
    intent = _new_intent(merchant, data, now)
    with transaction.atomic():  # inside a caller's transaction, a savepoint: a taken key rolls back to it
        if not payment_options(merchant, data.price_currency):
            # The customer would find nothing to choose on the checkout.
            raise InvalidRequest(
                f"nothing can pay {data.price_currency} here now: no enabled asset on a watched network "
                "with a wallet of the merchant",
                code="no_payment_options",
                param="currency",
            )
        # inserts the intent
        events_write(intent=intent, events=[("payment.created", "created", None)], transactions=[])
        if beside is not None:
            sql, params = beside.insert_sql(intent.representation, "%s::jsonb")
            with connection.cursor() as cursor:
                cursor.execute(sql, [*params, Jsonb(intent.representation)])
                beside.inserted(cursor.fetchone()[0])
    return intent


# --- the confirmation tiers each process last read, by (merchant, network asset) ------------------------

_TIERS: dict[tuple[str, int], str] = {}
_TIERS_KEPT = 10_000  # then forgotten, all at once: a merchant's next create reads them again


def _remember(key: tuple[str, int], tiers: str) -> None:
    if len(_TIERS) >= _TIERS_KEPT and key not in _TIERS:
        _TIERS.clear()
    _TIERS[key] = tiers


def _tiers_read(key: tuple[str, int], merchant_id: str, network_asset: NetworkAsset) -> str:
    sql, params = tiers_sql(merchant_id, network_asset)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)
        (tiers,) = cursor.fetchone()
    _remember(key, tiers)
    return tiers


# --- the statement ---------------------------------------------------------------------------------------

SNAPSHOT = "s"  # the statement's CTE holding the snapshot, as `j`, with the claimed address filled in
CLAIM = "c"  # the claimed address
CLAIMED = Sql(f"EXISTS (SELECT 1 FROM {CLAIM})")  # every row is written only if an address was claimed


def _write_with_address(
    intent: PaymentIntent, now: datetime, beside: RowBesideIntent | None, tiers: str
) -> bool:
    """Write the create (see the module's docstring) if an address could be claimed with `tiers` still
    the merchant's; complete `intent` as written and return True, else remember the tiers found and
    return False."""
    na = intent.network_asset
    verdict = policy.evaluate(intent_facts(intent, new=True), [], [], {}, now)
    intent.transition_method(verdict.state)()
    intent.event_sequence = 2
    intent.created_at = intent.updated_at = now
    # a new intent has no resolutions: its deadline is its expiry; the address is the statement's
    snapshot = intent_representation(intent, transactions=[], deadline=intent.expires_at)
    snapshot["payment_uri"] = payment_uri_template(na, int(intent.amount_due_base_units))
    transition = {
        "intent_id": intent.pk,
        "from_state": PaymentState.CREATED,
        "to_state": verdict.state,
        "cause": hashlib.sha256(f"0:{verdict.fingerprint}".encode()).hexdigest(),
        "reason": verdict.reason[:200],
        "verdict": verdict.as_dict(),
        "created_at": now,
    }
    tiers_now, tiers_params = tiers_sql(intent.merchant_id, na)
    claim, claim_params = claim_cte(
        CLAIM,
        merchant_id=intent.merchant_id,
        network_asset=na,
        now=now,
        # an address derived without its shown form (during an upgrade) is given one by the refill
        condition="display_address <> '' AND (SELECT t FROM g) = %s",
    )
    parts: list[tuple[str, list[Any]]] = [
        (f"g AS (SELECT {tiers_now} AS t)", tiers_params),
        (claim, [*claim_params, tiers]),
        (
            f"{SNAPSHOT} AS (SELECT jsonb_set(jsonb_set(x.j, '{{address}}', to_jsonb(c.display_address)), "
            "'{payment_uri}', to_jsonb(replace(x.j->>'payment_uri', %s, c.display_address))) AS j "
            f"FROM (SELECT %s::jsonb AS j) AS x, {CLAIM} AS c)",
            [ADDRESS_SLOT, Jsonb(snapshot)],
        ),
    ]
    claimed = {
        "address_id": Sql(f"(SELECT id FROM {CLAIM})"),
        "wallet_id": Sql(f"(SELECT wallet_id FROM {CLAIM})"),
    }
    if intent.quote is not None:
        parts.append(insert_cte("q", intent.quote, "id", where=CLAIMED))
        parts.append(insert_cte("i", intent, where=CLAIMED, quote_id=Sql("(SELECT id FROM q)"), **claimed))
    else:
        parts.append(insert_cte("i", intent, where=CLAIMED, **claimed))
    parts.append(insert_values_cte("t", StateTransition, transition, "id", where=CLAIMED))
    parts.append(
        insert_values_cte(
            "e1",
            Event,
            event_values(intent, "payment.created", 1, "created", now),
            where=CLAIMED,
            transition_id=Sql("NULL"),
            payload=Sql(_payload_sql(1, state=PaymentState.CREATED)),
        )
    )
    parts.append(
        insert_values_cte(
            "e2",
            Event,
            event_values(intent, f"payment.{verdict.state}", 2, None, now),
            where=CLAIMED,
            transition_id=Sql("(SELECT id FROM t)"),
            dedupe_key=Sql("'transition:' || (SELECT id FROM t)"),
            payload=Sql(_payload_sql(2)),
        )
    )
    if beside is not None:
        sql, params = beside.insert_sql(snapshot, f"(SELECT j FROM {SNAPSHOT})", CLAIMED)
        parts.append((f"b AS ({sql})", params))
    quote_select = "(SELECT id FROM q)" if intent.quote is not None else "NULL"
    beside_select = "(SELECT id FROM b)" if beside is not None else "NULL"
    with _one_transaction(), connection.cursor() as cursor:
        cursor.execute(
            "WITH "
            + ", ".join(sql for sql, _ in parts)
            + " SELECT c.id, c.wallet_id, c.derivation_index, c.address, c.display_address, "
            + "(SELECT next_index FROM payments_wallet WHERE id = c.wallet_id), (SELECT t FROM g), "
            + f"{quote_select}, {beside_select} FROM (SELECT 1) AS one LEFT JOIN {CLAIM} AS c ON TRUE",
            [param for _, params in parts for param in params],
        )
        address_id, wallet_id, index, address, shown, next_index, tiers_found, quote_pk, beside_pk = (
            cursor.fetchone()
        )
    if address_id is None:
        _remember((intent.merchant_id, na.pk), tiers_found)
        return False
    intent.address = PaymentAddress(
        pk=address_id,
        wallet_id=wallet_id,
        derivation_index=index,
        address=address,
        display_address=shown,
        claimed_at=now,
    )
    intent.wallet_id = wallet_id
    if intent.quote is not None:
        intent.quote.pk = quote_pk
    intent._state.adding = False
    # as the statement filled it in
    snapshot["address"] = shown
    snapshot["payment_uri"] = snapshot["payment_uri"].replace(ADDRESS_SLOT, shown)
    intent.representation = snapshot
    if beside is not None:
        beside.inserted(beside_pk)
    if pool_low(index, next_index):
        _top_up(intent, now, next_index)
    return True


def _one_transaction():
    """Nothing around a statement that is its own transaction (autocommit); inside a caller's transaction
    (a test's, a batch's), a savepoint, so that its failure leaves that transaction usable."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def _top_up(intent: PaymentIntent, now: datetime, seen_end: int) -> None:
    """Top the pool up before it runs dry, unless another create is doing it right now or did it since
    the statement saw the pool end at `seen_end`. The create is written already: a failure here is
    logged, not answered (the beat tops pools up too)."""
    try:
        address_pool_refill(
            merchant_id=intent.merchant_id,
            network=intent.network_asset.network,
            now=now,
            skip_if_busy=True,
            only_from=seen_end,
        )
    except Exception:  # the create is committed: whatever failed here, it stands
        logger.exception("topping up the address pool of %s after a create failed", intent.merchant_id)


def _payload_sql(sequence: int, state: str | None = None) -> str:
    """An event's payload in the create statement: the snapshot with its sequence (and, for
    `payment.created`, the state it was created in), as `event_row` builds it for other events."""
    extra = f"'sequence', {int(sequence)}" + (f", 'state', '{PaymentState(state).value}'" if state else "")
    return f"(SELECT j FROM {SNAPSHOT}) || jsonb_build_object({extra})"

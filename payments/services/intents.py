"""Intents: create (with address and quote when the asset is chosen), choose the asset later, cancel.
A create writes the intent, its transition and its events with one statement each."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from .. import policy
from ..errors import Conflict, InvalidRequest, NotFound
from ..models import (
    Event,
    Merchant,
    NetworkAsset,
    PaymentIntent,
    PaymentState,
    Quote,
    StateTransition,
)
from ..pricing import (
    FIAT_CURRENCIES,
    RateSource,
    display_places,
    quote,
    to_base_units,
)
from ..selectors import (
    INTENT_RELATED,
    intent_evidence,
    intent_facts,
    intent_representation,
    payment_options,
    transactions_representation,
)
from .addresses import address_claim
from .events import event_values, events_write
from .evidence import payment_settle
from .reference import default_rate_source
from .rows import Sql, insert_cte, insert_values_cte

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


class RowBesideIntent(Protocol):
    """One more row the create's statement writes beside the intent, made from its representation (the
    API's idempotency record with the response): `insert_sql` gives an `INSERT ... RETURNING id` and
    its parameters (`representation_sql` is an SQL expression with the representation as jsonb, for a
    row that stores it unchanged), `inserted` is told the id written, or None when its INSERT wrote
    nothing."""

    def insert_sql(
        self, representation: dict[str, Any], representation_sql: str
    ) -> tuple[str, list[Any]]: ...

    def inserted(self, row_id: int | None) -> None: ...


# --- intents ----------------------------------------------------------------------------------------


def payment_intent_create(
    *,
    merchant: Merchant,
    data: IntentInput,
    now: datetime,
    rate_source: RateSource | None = None,
    beside: RowBesideIntent | None = None,
) -> PaymentIntent:
    """Create an intent; if the asset is chosen, assign address and quote at once (-> awaiting_payment).

    A new intent has no evidence yet, so its first verdict is evaluated from empty evidence without
    reading any (the same pure `evaluate` that settles every later change), and the quote, the intent,
    its transition, its two events and the `beside` row are written in one statement. (Without an asset,
    `beside` is not written: the caller writes its row itself.)"""
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
            events_write(intent=intent, events=[("payment.created", "created", None)], transactions=[])
            return intent
        _assign(intent=intent, network_asset=data.network_asset, now=now, rate_source=rate_source)
        verdict = policy.evaluate(intent_facts(intent, new=True), [], [], {}, now)
        intent.transition_method(verdict.state)()
        intent.event_sequence = 2
        intent.created_at = intent.updated_at = now
        # a new intent has no resolutions: its deadline is its expiry
        snapshot = intent_representation(intent, transactions=[], deadline=intent.expires_at)
        transition = {
            "intent_id": intent.pk,
            "from_state": PaymentState.CREATED,
            "to_state": verdict.state,
            "cause": hashlib.sha256(f"0:{verdict.fingerprint}".encode()).hexdigest(),
            "reason": verdict.reason[:200],
            "verdict": verdict.as_dict(),
            "created_at": now,
        }
        # Quote, intent, transition and both events in one statement (the foreign keys between them
        # are checked at commit): a fraction of the cost of five ORM inserts. The snapshot is one
        # parameter, which both events' payloads (with their sequence) and the `beside` row use.
        parts: list[tuple[str, list[Any]]] = [(f"{SNAPSHOT} AS (SELECT %s::jsonb AS j)", [Jsonb(snapshot)])]
        if intent.quote is not None:
            parts.append(insert_cte("q", intent.quote, "id"))
            parts.append(insert_cte("i", intent, quote_id=Sql("(SELECT id FROM q)")))
        else:
            parts.append(insert_cte("i", intent))
        parts.append(insert_values_cte("t", StateTransition, transition, "id"))
        parts.append(
            insert_values_cte(
                "e1",
                Event,
                event_values(intent, "payment.created", 1, "created", now),
                transition_id=Sql("NULL"),
                payload=Sql(_payload_sql(1, state=PaymentState.CREATED)),
            )
        )
        parts.append(
            insert_values_cte(
                "e2",
                Event,
                event_values(intent, f"payment.{verdict.state}", 2, None, now),
                transition_id=Sql("(SELECT id FROM t)"),
                dedupe_key=Sql("'transition:' || (SELECT id FROM t)"),
                payload=Sql(_payload_sql(2)),
            )
        )
        if beside is not None:
            sql, params = beside.insert_sql(snapshot, f"(SELECT j FROM {SNAPSHOT})")
            parts.append((f"b AS ({sql})", params))
        quote_select = "(SELECT id FROM q)" if intent.quote is not None else "NULL"
        beside_select = "(SELECT id FROM b)" if beside is not None else "NULL"
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH " + ", ".join(sql for sql, _ in parts) + f" SELECT {quote_select}, {beside_select}",
                [param for _, params in parts for param in params],
            )
            quote_pk, beside_pk = cursor.fetchone()
        if beside is not None:
            beside.inserted(beside_pk)
        if intent.quote is not None:
            intent.quote.pk = quote_pk
        intent._state.adding = False
        intent.representation = snapshot
    return intent


SNAPSHOT = "s"  # the create statement's CTE holding the snapshot, as `j`


def _payload_sql(sequence: int, state: str | None = None) -> str:
    """An event's payload in the create statement: the snapshot with its sequence (and, for
    `payment.created`, the state it was created in), as `event_row` builds it for other events."""
    extra = f"'sequence', {int(sequence)}" + (f", 'state', '{PaymentState(state).value}'" if state else "")
    return f"(SELECT j FROM {SNAPSHOT}) || jsonb_build_object({extra})"


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


FULFILLABLE_STATES = (PaymentState.PAID, PaymentState.OVERPAID)


def payment_intent_fulfil(
    *, merchant: Merchant, intent_id: str, reference: str, now: datetime
) -> PaymentIntent:
    """Record the merchant's report that the order of a paid intent was fulfilled, once, with an event
    `payment.fulfilled`. Reporting it again changes nothing; another reference is a conflict. Fulfilment is
    the merchant's word, not chain evidence: it never changes the payment's state."""
    with transaction.atomic(savepoint=False):
        intent = _lock_intent(merchant=merchant, intent_id=intent_id)
        if intent.fulfilled_at is not None:
            if reference and reference != intent.fulfilment_reference:
                raise Conflict(
                    f"the intent was reported fulfilled already, with reference {intent.fulfilment_reference!r}",
                    code="intent_already_fulfilled",
                )
            return intent
        if intent.state not in FULFILLABLE_STATES:
            raise Conflict(
                f"an intent in state {intent.state} is not paid: fulfil orders only once paid",
                code="intent_not_paid",
            )
        intent.fulfilled_at = now
        intent.fulfilment_reference = reference
        _, observations, _, tips = intent_evidence(intent)
        events_write(
            intent=intent,
            events=[("payment.fulfilled", "fulfilled", None)],
            transactions=transactions_representation(intent, observations, tips),
        )
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
    address, tiers = address_claim(merchant_id=intent.merchant_id, network_asset=network_asset, now=now)
    intent.required_confirmations = policy.required_confirmations_for(
        amount, tiers, network_asset.default_confirmations
    )
    intent.network_asset = network_asset
    intent.amount_due_base_units = amount
    intent.wallet_id = address.wallet_id
    intent.address = address

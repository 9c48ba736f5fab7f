"""Intents after their create (`intent_create`): choose the asset, cancel, report fulfilled; and the
pricing and price checks a create shares with choosing the asset."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext

from django.conf import settings
from django.db import transaction

from .. import policy
from ..errors import Conflict, InvalidRequest, NotFound
from ..models import (
    Merchant,
    NetworkAsset,
    PaymentIntent,
    PaymentState,
    Quote,
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
    transactions_representation,
)
from .addresses import address_claim
from .events import events_write
from .evidence import payment_settle
from .reference import default_rate_source

# --- intents ----------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Priced:
    """What an intent asks for in an asset: base units, and the quote that converted a fiat price."""

    amount: int
    quote: Quote | None


def price(
    *,
    price_amount: Decimal,
    price_currency: str,
    network_asset: NetworkAsset,
    now: datetime,
    rate_source: RateSource | None,
) -> Priced:
    """The amount due for a price in the asset: converted at a quoted rate (the quote unsaved) if the
    price is fiat, else the price itself in base units."""
    if price_currency not in FIAT_CURRENCIES:
        return Priced(to_base_units(price_amount, network_asset.decimals), None)
    quoted = quote(
        source=rate_source or default_rate_source(),
        price=price_amount,
        currency=price_currency,
        asset=network_asset.asset.code,
        decimals=network_asset.decimals,
        now=now,
        ttl=timedelta(minutes=settings.GATEWAY_QUOTE_TTL_MINUTES),
        display_decimals=network_asset.asset.display_decimals,
    )
    return Priced(
        quoted.amount_base_units,
        Quote(
            price_amount=price_amount,
            price_currency=price_currency,
            network_asset=network_asset,
            rate=quoted.rate.rate,
            source=quoted.rate.source,
            rate_time=quoted.rate.time,
            quoted_at=now,
            expires_at=quoted.expires_at,
            amount_base_units=quoted.amount_base_units,
            rounded_to_decimals=display_places(network_asset.decimals, network_asset.asset.display_decimals),
        ),
    )


def _assign(
    *, intent: PaymentIntent, network_asset: NetworkAsset, now: datetime, rate_source: RateSource | None
) -> None:
    """Claim the intent's address, quote its amount and snapshot the confirmation policy. The address
    claim is written; the quote (`intent.quote`, unsaved) and the intent are the caller's to save."""
    priced = price(
        price_amount=intent.price_amount,
        price_currency=intent.price_currency,
        network_asset=network_asset,
        now=now,
        rate_source=rate_source,
    )
    intent.quote = priced.quote
    address, tiers = address_claim(merchant_id=intent.merchant_id, network_asset=network_asset, now=now)
    intent.required_confirmations = policy.required_confirmations_for(
        priced.amount, tiers, network_asset.default_confirmations
    )
    intent.network_asset = network_asset
    intent.amount_due_base_units = priced.amount
    intent.wallet_id = address.wallet_id
    intent.address = address

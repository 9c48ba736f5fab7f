"""The value of each payment at the rate when it was paid, learnt the way a merchant learns it: by reading
payments' event stream (`payment.paid`, `payment.overpaid`) from a cursor. Two steps, so that no rate
request ever runs under a lock: `valuations_from_events` records which payments need a rate (reading and
moving the cursor commit together); `valuations_price` asks the rate source for the pairs still unpriced
and stores what it answers (or the error, retried on the next round)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F

from payments.models import Event, PaymentIntent
from payments.pricing import FIAT_CURRENCIES, Rate, RateSource
from payments.services.reference import default_rate_source

from .models import FeedCursor, PaidValuation

logger = logging.getLogger(__name__)

CURSOR = "paid-valuations"
PAID_EVENTS = ("payment.paid", "payment.overpaid")


def valuation_currency(price_currency: str) -> str:
    """A payment is valued in its price's currency when that is fiat, else in USD."""
    return price_currency if price_currency in FIAT_CURRENCIES else "USD"


def valuations_from_events(*, now: datetime, batch: int = 1000) -> int:
    """Read the next paid events after the cursor; each (re)opens its payment's valuation, unpriced.
    Returns the events read."""
    with transaction.atomic():
        # Made by migration 0005 at the newest event then: payments paid before the gateway valued them
        # were paid at rates nobody asked for, and today's is not theirs (they stay unvalued).
        FeedCursor.objects.bulk_create([FeedCursor(name=CURSOR)], ignore_conflicts=True)
        cursor = FeedCursor.objects.select_for_update().get(name=CURSOR)
        events = list(
            Event.objects.filter(position__gt=cursor.position, type__in=PAID_EVENTS)
            .order_by("position")
            .values_list("pk", "intent_id", "created_at", "position")[:batch]
        )
        currencies = dict(
            PaymentIntent.objects.filter(pk__in={e[1] for e in events}).values_list("pk", "price_currency")
        )
        for event_id, intent_id, created_at, _ in events:
            valuation = PaidValuation.objects.filter(pk=intent_id).first()
            if valuation is not None and valuation.event_id == event_id:
                continue  # read before (a cursor moved back by hand): nothing new
            PaidValuation.objects.update_or_create(
                intent_id=intent_id,
                defaults={
                    "event_id": event_id,
                    "paid_at": created_at,
                    "currency": valuation_currency(currencies[intent_id]),
                    "rate": None,
                    "rate_source": "",
                    "rate_time": None,
                    "attempts": 0,
                    "last_error": "",
                    "updated_at": now,
                },
            )
        if events:
            cursor.position = events[-1][3]
            cursor.save(update_fields=["position"])
    return len(events)


def valuations_price(*, now: datetime, source: RateSource | None = None, batch: int = 1000) -> int:
    """Price the unpriced valuations, one rate request per asset and currency. Returns how many priced."""
    source = source or default_rate_source()
    # A rate asked for long after the payment is not the rate when paid: past the delay, left unvalued.
    late = now - timedelta(seconds=settings.GATEWAY_VALUATION_MAX_DELAY_S)
    PaidValuation.objects.filter(rate__isnull=True, paid_at__lt=late).exclude(
        last_error__startswith="not valued"
    ).update(
        last_error=f"not valued: no rate within {settings.GATEWAY_VALUATION_MAX_DELAY_S:g} s of the payment"
    )
    pending = list(
        PaidValuation.objects.filter(rate__isnull=True, paid_at__gte=late)
        .order_by("updated_at")
        .values_list("pk", "currency", "intent__network_asset__asset__code")[:batch]
    )
    rates: dict[tuple[str, str], Rate | str] = {}
    priced = 0
    for intent_id, currency, asset in pending:
        pair = (asset, currency)
        if pair not in rates:
            try:
                rates[pair] = source.rate(asset=asset, currency=currency, now=now)
            except Exception as exc:  # the source down or without the pair: kept unpriced, retried
                logger.warning("no %s/%s rate for a paid valuation: %s", asset, currency, exc)
                rates[pair] = f"no rate: {exc}"[:300]
        rate = rates[pair]
        rows = PaidValuation.objects.filter(pk=intent_id, rate__isnull=True)
        if isinstance(rate, str):
            rows.update(attempts=F("attempts") + 1, last_error=rate, updated_at=now)
            continue
        priced += rows.update(
            rate=rate.rate, rate_source=rate.source, rate_time=rate.time, last_error="", updated_at=now
        )
    return priced

"""Rate sources and quotes: converting a fiat price into an amount due in the asset's base units.

A rate is evidence: the quote stores the rate, its source, its time and its expiry beside the amount.
Stablecoins use their peg (1 USDC = 1 USD) with no lookup. Other pairs come from a `RateSource`; the
HTTP source speaks the public ticker shape of Coinbase's spot price API
(`GET {base}/v2/prices/BTC-USD/spot` -> `{"data": {"amount": "60000.00", "base": "BTC", "currency": "USD"}}`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from typing import Protocol

from .errors import RateUnavailable

FIAT_CURRENCIES = {"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "JPY": 0}


@dataclass(frozen=True)
class Rate:
    """`rate` units of the fiat currency buy one whole unit of the asset."""

    asset: str
    currency: str
    rate: Decimal
    source: str
    time: datetime


class RateSource(Protocol):
    def rate(self, *, asset: str, currency: str, now: datetime) -> Rate: ...


class PegRateSource:
    """A stablecoin in its peg currency is worth exactly one unit; anything else goes to `fallback`."""

    def __init__(self, pegs: dict[str, str], fallback: RateSource | None):
        self.pegs = pegs
        self.fallback = fallback

    def rate(self, *, asset: str, currency: str, now: datetime) -> Rate:
        if self.pegs.get(asset) == currency:
            return Rate(asset, currency, Decimal(1), f"peg:{asset}={currency}", now)
        if self.fallback is None:
            raise RateUnavailable(f"no rate source for {asset}/{currency}")
        return self.fallback.rate(asset=asset, currency=currency, now=now)


class FixedRateSource:
    """Rates from configuration. For the demo and for operators pinning a rate; the source says so."""

    def __init__(self, rates: dict[tuple[str, str], Decimal]):
        self.rates = rates

    @classmethod
    def parse(cls, text: str) -> FixedRateSource:
        rates = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            pair, _, value = item.partition("=")
            asset, _, currency = (part.strip().upper() for part in pair.partition("-"))
            try:
                rate = Decimal(value.strip())
            except InvalidOperation:
                rate = Decimal("NaN")
            # A zero rate would divide by zero in quote(), a negative one would quote a negative amount.
            if not asset or not currency or not rate.is_finite() or rate <= 0:
                raise ValueError(f"bad fixed rate {item!r}: expected ASSET-CURRENCY=positive number")
            rates[(asset, currency)] = rate
        return cls(rates)

    def rate(self, *, asset: str, currency: str, now: datetime) -> Rate:
        try:
            value = self.rates[(asset, currency)]
        except KeyError:
            raise RateUnavailable(f"no fixed rate configured for {asset}-{currency}") from None
        return Rate(asset, currency, value, "fixed", now)


class HttpTickerRateSource:
    """Spot prices from a ticker API in Coinbase's `/v2/prices/{BASE}-{QUOTE}/spot` shape."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0, name: str = "coinbase"):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.name = name

    def rate(self, *, asset: str, currency: str, now: datetime) -> Rate:
        url = f"{self.base_url}/v2/prices/{asset}-{currency}/spot"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            raise RateUnavailable(f"rate source {self.name} failed for {asset}-{currency}: {exc}") from exc
        try:
            data = body["data"]
            value = Decimal(str(data["amount"]))
            if data.get("base", asset) != asset or data.get("currency", currency) != currency:
                raise ValueError("answer is for another pair")
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise RateUnavailable(f"rate source {self.name} gave an unreadable answer: {exc}") from exc
        if not value.is_finite() or value <= 0:
            raise RateUnavailable(f"rate source {self.name} gave a non-positive rate {value}")
        return Rate(asset, currency, value, f"{self.name}:{url}", now)


@dataclass(frozen=True)
class QuotedAmount:
    amount_base_units: int
    rate: Rate
    expires_at: datetime


# Enough digits for a uint256 of base units (78): Decimal's default 28-digit context would round scaleb().
_PREC = 100


def to_base_units(amount: Decimal, decimals: int) -> int:
    """An exact decimal amount of the asset in base units; the caller has checked its precision."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        scaled = amount.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{amount} has more than {decimals} decimals")
    return int(scaled)


def from_base_units(amount: int, decimals: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = _PREC
        return Decimal(amount).scaleb(-decimals)


def format_amount(amount: int, decimals: int) -> str:
    """Base units as a plain decimal string with exactly `decimals` places ("49.000000")."""
    text = f"{from_base_units(amount, decimals):f}"
    if decimals and "." not in text:
        text += "." + "0" * decimals
    return text


def quote(
    *,
    source: RateSource,
    price: Decimal,
    currency: str,
    asset: str,
    decimals: int,
    now: datetime,
    ttl: timedelta,
    display_decimals: int | None = None,
) -> QuotedAmount:
    """Convert a fiat price to base units at the source's rate, rounding up so the merchant is never short.

    With `display_decimals`, the amount is rounded up to that many decimals of the asset (never more than
    `decimals`), so that a customer reads and types `0.00416667 ETH`, not `0.004166666666666667 ETH`; the
    rounded amount is the amount due, so the page, the API and the evaluation agree exactly."""
    rate = source.rate(asset=asset, currency=currency, now=now)
    return QuotedAmount(
        amount_base_units=amount_due_base_units(
            price=price, rate=rate.rate, decimals=decimals, display_decimals=display_decimals
        ),
        rate=rate,
        expires_at=now + ttl,
    )


def amount_due_base_units(
    *, price: Decimal, rate: Decimal, decimals: int, display_decimals: int | None = None
) -> int:
    """ceil(price / rate) in base units, or in steps of 10^-display_decimals of the asset: exact integer
    arithmetic, whatever the number of digits."""
    places = display_places(decimals, display_decimals)
    price_num, price_den = price.as_integer_ratio()
    rate_num, rate_den = rate.as_integer_ratio()
    # price / rate in steps of 10^-places, rounded up (ceil of a positive fraction by negated floor division)
    steps = -((-price_num * rate_den * 10**places) // (price_den * rate_num))
    return steps * 10 ** (decimals - places)


def display_places(decimals: int, display_decimals: int | None) -> int:
    """How many decimals an amount of the asset is shown with at least: its display precision (capped at
    its decimals), or every decimal when it has none."""
    return decimals if display_decimals is None else min(display_decimals, decimals)


def format_amount_for_display(amount: int, decimals: int, display_decimals: int | None) -> str:
    """`format_amount` without the trailing zeros beyond the asset's display precision ("0.00416667", not
    "0.004166670000000000"); digits that matter are never dropped."""
    text = format_amount(amount, decimals)
    keep = display_places(decimals, display_decimals)
    if "." not in text:
        return text
    whole, fraction = text.split(".")
    fraction = fraction.rstrip("0").ljust(keep, "0")
    return f"{whole}.{fraction}" if fraction else whole

"""Totals of the reconciliation: per merchant, asset, network and day (of the payment's creation), or over
the whole range. Summed from the very rows the export streams (`reconciliation_rows`), so a file's column
sums and these totals are equal by construction, not by a second query that could drift.

Asset amounts are summed exactly in the asset's units; fiat values per currency (a range may hold prices in
USD and EUR); fees in the network's native coin."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from . import rules

ASSET_AMOUNTS = ("amount_received", "amount_counted", "amount_refunded", "amount_swept", "amount_on_address")
FIAT_AMOUNTS = (
    ("fiat_value_at_quote", "price_currency"),
    ("fiat_value_when_paid", "paid_value_currency"),
    ("service_fee", "service_fee_currency"),
)
PRESETS = ("today", "7d", "this_month", "last_month")


def preset_range(preset: str, now: datetime) -> tuple[datetime, datetime]:
    """[from, to) in UTC: `today`; `7d` the last seven days with today; `this_month`; `last_month`."""
    today = now.astimezone(UTC).date()

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=UTC)

    tomorrow = midnight(today + timedelta(days=1))
    if preset == "today":
        return midnight(today), tomorrow
    if preset == "7d":
        return midnight(today - timedelta(days=6)), tomorrow
    first = today.replace(day=1)
    if preset == "this_month":
        return midnight(first), tomorrow
    if preset == "last_month":
        previous = (first - timedelta(days=1)).replace(day=1)
        return midnight(previous), midnight(first)
    raise ValueError(preset)


@dataclass
class _Group:
    merchant_id: str
    day: str | None
    asset: str | None
    network: str | None
    payments: int = 0

    def __post_init__(self) -> None:
        self.amounts: dict[str, Decimal] = dict.fromkeys(ASSET_AMOUNTS, Decimal(0))
        self.fees: dict[str, Decimal] = {}
        self.fiat: dict[str, dict[str, Decimal]] = {name: {} for name, _ in FIAT_AMOUNTS}
        self.unvalued = 0  # paid rows without a value when paid (the rate source was down)
        self.statuses: dict[str, int] = dict.fromkeys(rules.STATUSES, 0)

    def add(self, row: dict) -> None:
        self.payments += 1
        for name in ASSET_AMOUNTS:
            if row[name] is not None:
                self.amounts[name] += Decimal(row[name])
        if row["network_fee"] is not None:
            asset = row["network_fee_asset"]
            self.fees[asset] = self.fees.get(asset, Decimal(0)) + Decimal(row["network_fee"])
        for name, currency_column in FIAT_AMOUNTS:
            currency = row[currency_column]
            if row[name] is not None and currency:
                bucket = self.fiat[name]
                bucket[currency] = bucket.get(currency, Decimal(0)) + Decimal(row[name])
        if row["paid_at"] and row["fiat_value_when_paid"] is None:
            self.unvalued += 1
        self.statuses[row["reconciliation_status"]] += 1

    def render(self) -> dict:
        return {
            "merchant_id": self.merchant_id,
            "day": self.day,
            "asset": self.asset,
            "network": self.network,
            "payments": self.payments,
            **{name: _text(value) for name, value in self.amounts.items()},
            "network_fees": {asset: _text(v) for asset, v in sorted(self.fees.items())},
            **{name: {c: _text(v) for c, v in sorted(bucket.items())} for name, bucket in self.fiat.items()},
            "paid_without_value": self.unvalued,
            "statuses": self.statuses,
        }


def _text(value: Decimal) -> str:
    return f"{value:f}"


def totals(rows: Iterable[dict], *, by_day: bool = True) -> list[dict]:
    """The rows' totals per (merchant, day, asset, network), `day` None over the whole range; ordered."""
    groups: dict[tuple, _Group] = {}
    for row in rows:
        day = row["created_at"][:10] if by_day else None
        key = (row["merchant_id"], day, row["asset"], row["network"])
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(*key)
        group.add(row)
    ordered = sorted(
        groups.values(), key=lambda g: (g.merchant_id, g.day or "", g.asset or "", g.network or "")
    )
    return [g.render() for g in ordered]

"""A moment as finance types it: a date (`2026-11-01`, midnight UTC) or an ISO 8601 time with its offset."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from django.utils.dateparse import parse_date, parse_datetime

MOMENT_HELP = "a date (2026-11-01) or a time with its offset (2026-11-01T09:30:00Z), years 1970 to 9998"
YEARS = range(1970, 9999)  # a day or two of arithmetic either side never overflows


def moment_parse(text: str) -> datetime | None:
    """The moment, or None when the text is neither (a time without an offset is ambiguous: None)."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:  # a well-formed but impossible date (2026-02-30) is a ValueError, not None
        day = parse_date(text) if len(text) == 10 else None
        moment = datetime.combine(day, time(), tzinfo=UTC) if day is not None else parse_datetime(text)
    except (ValueError, OverflowError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    try:
        in_range = moment.astimezone(UTC).year in YEARS
    except OverflowError:
        return None
    return moment if in_range else None


def day_parse(text: str) -> date | None:
    """A UTC day (`2026-11-01`), or None."""
    moment = moment_parse(text) if isinstance(text, str) and len(text) == 10 else None
    return moment.date() if moment is not None else None

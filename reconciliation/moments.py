"""A moment as finance types it: a date (`2026-11-01`, midnight UTC) or an ISO 8601 time with its offset."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.utils.dateparse import parse_date, parse_datetime

MOMENT_HELP = "a date (2026-11-01) or a time with its offset (2026-11-01T09:30:00Z)"


def moment_parse(text: str) -> datetime | None:
    """The moment, or None when the text is neither (a time without an offset is ambiguous: None)."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    day = parse_date(text) if len(text) == 10 else None
    if day is not None:
        return datetime.combine(day, time(), tzinfo=UTC)
    try:
        moment = parse_datetime(text)
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None

"""Celery entry points of the reconciliation app."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from .valuations import valuations_from_events, valuations_price


@shared_task(name="reconciliation.tasks.value_paid_payments")
def value_paid_payments() -> int:
    """Value newly paid payments at the day's rate (beat, every GATEWAY_VALUATION_POLL_S); how many priced."""
    now = timezone.now()
    valuations_from_events(now=now)
    return valuations_price(now=now)


@shared_task(name="reconciliation.tasks.reverify_payments")
def reverify_payments() -> int:
    """The nightly re-verification (beat, GATEWAY_REVERIFY_AT UTC): the last GATEWAY_REVERIFY_DAYS days of
    payments against the chain; how many mismatches it found."""
    from datetime import timedelta

    from django.conf import settings

    from payments.scanning import backend_for

    from .verification import reverify

    now = timezone.now()
    since = now - timedelta(days=settings.GATEWAY_REVERIFY_DAYS)
    return reverify(since=since, now=now, backend_for=backend_for).mismatches


@shared_task(name="reconciliation.tasks.close_yesterday")
def close_yesterday() -> int:
    """The daily close of yesterday (UTC) (beat, GATEWAY_CLOSE_AT UTC); how many closes differ."""
    from datetime import timedelta

    from payments.scanning import backend_for

    from .close import close_day

    now = timezone.now()
    closes = close_day(day=(now - timedelta(days=1)).date(), now=now, backend_for=backend_for)
    return sum(c.status == "difference" for c in closes)

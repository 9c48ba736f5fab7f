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

"""Celery entry points: thin wrappers that call one service each. Safe to run twice."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import services
from .models import IdempotencyRecord


@shared_task(name="payments.tasks.expire_due_intents")
def expire_due_intents() -> int:
    return services.expire_due_intents(now=timezone.now())


@shared_task(name="payments.tasks.top_up_address_pools")
def top_up_address_pools() -> int:
    return services.address_pools_top_up(now=timezone.now())


@shared_task(name="payments.tasks.purge_idempotency_records")
def purge_idempotency_records() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.GATEWAY_IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


@shared_task(name="payments.tasks.scan_networks")
def scan_networks() -> dict[str, int | None]:
    """One batch for every enabled network with a node configured; a network another worker is
    scanning is skipped (advisory lock)."""
    from .models import Network
    from .scanning import backend_for, network_scan

    lags: dict[str, int | None] = {}
    for network in Network.objects.filter(enabled=True).exclude(rpc_url=""):
        try:
            report = network_scan(backend=backend_for(network), now=timezone.now())
        except NotImplementedError:
            continue
        lags[network.code] = report.lag
    return lags


@shared_task(name="payments.tasks.deliver_webhooks")
def deliver_webhooks() -> dict[str, int]:
    """Dispatch new events and send due webhook attempts for up to GATEWAY_WEBHOOK_DRAIN_S seconds.
    Several run at once safely (advisory lock for dispatch, SKIP LOCKED claims)."""
    from .webhooks.delivery import deliveries_drain

    report = deliveries_drain(budget_s=settings.GATEWAY_WEBHOOK_DRAIN_S)
    return {"dispatched": report.dispatched, "attempts": report.attempts, "delivered": report.delivered}

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


@shared_task(name="payments.tasks.settle_due_refunds")
def settle_due_refunds() -> int:
    """Refunds whose window closed unpaid fail; refunds confirming are re-settled."""
    return services.refunds_settle_due(now=timezone.now())


@shared_task(name="payments.tasks.top_up_address_pools")
def top_up_address_pools() -> int:
    return services.address_pools_top_up(now=timezone.now())


@shared_task(name="payments.tasks.purge_idempotency_records")
def purge_idempotency_records() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.GATEWAY_IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


@shared_task(name="payments.tasks.purge_webhook_log")
def purge_webhook_log() -> int:
    """Finished deliveries and their attempts older than GATEWAY_WEBHOOK_LOG_DAYS (0: kept for ever)."""
    from .webhooks.retention import webhook_log_purge

    if settings.GATEWAY_WEBHOOK_LOG_DAYS <= 0:
        return 0
    return webhook_log_purge(now=timezone.now(), keep=timedelta(days=settings.GATEWAY_WEBHOOK_LOG_DAYS))


@shared_task(name="payments.tasks.scan_networks")
def scan_networks() -> list[str]:
    """The beat's tick: one `scan_network` task per enabled network with a node, so a dead or slow node
    holds up only its own scan. A scan still queued after two ticks expires (the next tick sends another);
    two running for one network are harmless (the advisory lock lets one through)."""
    from .scanning import networks_to_scan

    codes = networks_to_scan()
    for code in codes:
        scan_network.apply_async(args=[code], expires=2 * settings.GATEWAY_SCAN_INTERVAL_S)
    return codes


@shared_task(name="payments.tasks.scan_network")
def scan_network(network_code: str) -> dict[str, str | int | None]:
    """One batch of one network; a failure is logged, counted on the network's scan status and returned."""
    from .scanning import network_scan_once

    report = network_scan_once(network_code=network_code, now=timezone.now())
    return {"network": report.network_code, "end": report.end, "lag": report.lag, "error": report.error}


@shared_task(name="payments.tasks.deliver_webhooks")
def deliver_webhooks() -> dict[str, int]:
    """Dispatch new events and send due webhook attempts for up to GATEWAY_WEBHOOK_DRAIN_S seconds.
    Several run at once safely (advisory lock for dispatch, SKIP LOCKED claims)."""
    from .webhooks.delivery import deliveries_drain

    report = deliveries_drain(budget_s=settings.GATEWAY_WEBHOOK_DRAIN_S)
    return {"dispatched": report.dispatched, "attempts": report.attempts, "delivered": report.delivered}

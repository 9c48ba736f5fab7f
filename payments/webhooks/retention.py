"""How long the delivery log is kept. Finished deliveries (delivered, or failed for good) and their attempts
are deleted GATEWAY_WEBHOOK_LOG_DAYS after they were created, so the log's tables stay bounded; pending and
paused deliveries are kept whatever their age, and events are never deleted (the merchant's `GET /events`
and replays read them)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction

from payments.models import WebhookEndpoint

FINISHED = ("delivered", "failed")


def webhook_log_purge(*, now: datetime, keep: timedelta, batch: int = 2000) -> int:
    """Delete the finished deliveries created before `now - keep`, with their attempts, `batch` at a time
    per endpoint (each batch its own transaction: short locks, and an interrupted purge just resumes).
    Walks each endpoint's (endpoint, created_at) index, so a purge with nothing to do reads nothing old.
    Returns how many deliveries went."""
    cutoff = now - keep
    removed = 0
    for endpoint_id in WebhookEndpoint.objects.order_by("id").values_list("id", flat=True):
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    """
                    WITH doomed AS (
                        SELECT id FROM payments_webhookdelivery
                        WHERE endpoint_id = %(endpoint)s AND created_at < %(cutoff)s
                          AND state = ANY(%(finished)s)
                        ORDER BY created_at
                        LIMIT %(batch)s
                        FOR UPDATE SKIP LOCKED
                    ), attempts AS (
                        DELETE FROM payments_webhookattempt a USING doomed WHERE a.delivery_id = doomed.id
                    )
                    DELETE FROM payments_webhookdelivery d USING doomed WHERE d.id = doomed.id
                    """,
                    {"endpoint": endpoint_id, "cutoff": cutoff, "finished": list(FINISHED), "batch": batch},
                )
                count = cursor.rowcount
            removed += count
            if count < batch:
                break
    return removed

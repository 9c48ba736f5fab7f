"""What an operator's health checks and metrics read: the watched networks' scan status and the webhook
backlog, one query each, shared by /readyz (gateway/health.py) and /metrics (gateway/metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q

from .models import Event, Network, WebhookDelivery


@dataclass(frozen=True)
class NetworkScan:
    code: str
    last_success_at: datetime | None
    lag_blocks: int | None
    errors_total: int
    errors_in_a_row: int


@dataclass(frozen=True)
class WebhookBacklog:
    undispatched_events: int
    oldest_undispatched_at: datetime | None
    deliveries_pending: int  # to enabled endpoints, due or waiting for their retry
    attempts_due: int
    oldest_due_at: datetime | None

    def age_s(self, now: datetime) -> float:
        """How long the oldest work a worker would take has waited (0 when there is none)."""
        oldest = min(
            (t for t in (self.oldest_undispatched_at, self.oldest_due_at) if t is not None), default=None
        )
        return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


def watched_networks_scan() -> list[NetworkScan]:
    """Every enabled network with a node configured (what the scanner watches), with its scan status."""
    rows = (
        Network.objects.filter(enabled=True)
        .exclude(rpc_url="")
        .order_by("code")
        .values_list(
            "code",
            "scan_status__last_success_at",
            "scan_status__lag_blocks",
            "scan_status__errors_total",
            "scan_status__errors_in_a_row",
        )
    )
    return [
        NetworkScan(code, last_success_at, lag, errors_total or 0, errors_in_a_row or 0)
        for code, last_success_at, lag, errors_total, errors_in_a_row in rows
    ]


def webhook_backlog(*, now: datetime) -> WebhookBacklog:
    """Events not dispatched yet, and deliveries pending to endpoints a worker sends to (disabled or deleted
    endpoints keep theirs unsent, which is no worker's backlog)."""
    events = Event.objects.filter(position__isnull=True).aggregate(n=Count("id"), oldest=Min("created_at"))
    due = Q(next_attempt_at__lte=now)
    pending = WebhookDelivery.objects.filter(
        state=WebhookDelivery.State.PENDING, endpoint__enabled=True, endpoint__deleted_at__isnull=True
    ).aggregate(total=Count("id"), due=Count("id", filter=due), oldest_due=Min("next_attempt_at", filter=due))
    return WebhookBacklog(
        undispatched_events=events["n"],
        oldest_undispatched_at=events["oldest"],
        deliveries_pending=pending["total"],
        attempts_due=pending["due"],
        oldest_due_at=pending["oldest_due"],
    )

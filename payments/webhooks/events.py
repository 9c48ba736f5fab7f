"""Event types and the JSON shapes of events (one shape for webhook bodies and `GET /api/v1/events`),
endpoints and deliveries."""

from __future__ import annotations

import json
from typing import Any

from payments.models import Event, PaymentState, WebhookDelivery, WebhookEndpoint
from payments.models.refunds import REFUND_EVENT_TYPES
from payments.models.settlements import SETTLEMENT_EVENT_TYPES
from payments.policy import EXCEPTION_KINDS

EVENT_TYPES: tuple[str, ...] = tuple(
    ["payment.created"]
    + [f"payment.{state}" for state in PaymentState.values if state != PaymentState.CREATED]
    + sorted({f"payment.{kind}_detected" for kind in EXCEPTION_KINDS.values()})
    + ["payment.fulfilled"]
    # the nightly re-verification found the chain disagreeing with the stored evidence (reconciliation app)
    + ["payment.verification_mismatch"]
    # the daily close found the chain's balance of the payment's address differing from the evidence's
    + ["payment.close_difference"]
    + list(REFUND_EVENT_TYPES)
    + list(SETTLEMENT_EVENT_TYPES)
)


def event_envelope(event: Event) -> dict[str, Any]:
    """The event as merchants see it: id, type, time and the payment snapshot at that moment (`data`,
    with the payment's per-payment `sequence`, to recognise a stale event)."""
    return {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "data": event.payload,
    }


def event_body(event: Event) -> bytes:
    """The exact bytes sent and signed: `event_envelope` as compact JSON."""
    return event_body_from(event.id, event.type, event.created_at, event.payload)


def event_body_from(event_id: str, type_: str, created_at, payload: dict | str) -> bytes:
    """The body from an event's columns; `payload` may be the JSON text as PostgreSQL returns it (it is
    embedded as it is, not parsed and written again)."""
    head = json.dumps(
        {"id": event_id, "object": "event", "type": type_, "created_at": created_at.isoformat()},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    )
    return (head[:-1] + ',"data":' + data + "}").encode()


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def endpoint_representation(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it; `secret` only in the answer that created it (create, rotate)."""
    found = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason or None,
        "disabled_at": _iso(endpoint.disabled_at),
        "failing_since": _iso(endpoint.failing_since),
        "last_success_at": _iso(endpoint.last_success_at),
        "created_at": endpoint.created_at.isoformat(),
    }
    if secret is not None:
        found["secret"] = secret
    return found


def delivery_representation(delivery: WebhookDelivery) -> dict[str, Any]:
    """A delivery with its attempt log (prefetch `attempt_log` when listing)."""
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "event_id": delivery.event_id,
        "endpoint_id": delivery.endpoint_id,
        "kind": delivery.kind,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": _iso(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "last_status_code": delivery.last_status_code,
        "delivered_at": _iso(delivery.delivered_at),
        "created_at": delivery.created_at.isoformat(),
        "attempt_log": [
            {
                "number": a.number,
                "started_at": a.started_at.isoformat(),
                "outcome": a.outcome,
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error or None,
                "response_excerpt": a.response_excerpt,
            }
            for a in delivery.attempt_log.all()
        ],
    }

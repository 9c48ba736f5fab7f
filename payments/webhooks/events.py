"""Event types and the one JSON shape of an event, shared by webhook bodies and `GET /api/v1/events`."""

from __future__ import annotations

import json
from typing import Any

from payments.models import Event, PaymentState
from payments.policy import EXCEPTION_KINDS

EVENT_TYPES: tuple[str, ...] = tuple(
    ["payment.created"]
    + [f"payment.{state}" for state in PaymentState.values if state != PaymentState.CREATED]
    + sorted({f"payment.{kind}_detected" for kind in EXCEPTION_KINDS.values()})
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
    """The exact bytes sent and signed."""
    return json.dumps(event_envelope(event), separators=(",", ":"), ensure_ascii=False).encode()

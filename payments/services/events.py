"""Events: the outbox. Each carries the next per-payment sequence number and the payment's snapshot."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import (
    Event,
    PaymentIntent,
    StateTransition,
)
from ..selectors import (
    intent_representation,
)


def events_write(
    *,
    intent: PaymentIntent,
    events: list[tuple[str, str, StateTransition | None]],
    transactions: list[dict[str, Any]],
    details: dict[str, Any] | None = None,
) -> None:
    """Save the intent and append its events to the outbox, each with the next per-payment sequence
    number and the payment's snapshot (the unique (intent, sequence) and (intent, dedupe key)
    constraints are the backstop against a double write). `details` adds keys beside the snapshot's,
    for an event about a decision the snapshot does not show (the back office's overpayment decision)."""
    first = intent.event_sequence + 1
    intent.event_sequence += len(events)
    intent.save()
    snapshot = intent_representation(intent, transactions)
    intent.representation = snapshot
    Event.objects.bulk_create(
        [
            event_row(intent, type, first + offset, dedupe_key, transition, snapshot | (details or {}))
            for offset, (type, dedupe_key, transition) in enumerate(events)
        ]
    )


def event_row(
    intent: PaymentIntent,
    type: str,
    sequence: int,
    dedupe_key: str,
    transition: StateTransition | None,
    snapshot: dict[str, Any],
) -> Event:
    return Event(
        merchant_id=intent.merchant_id,
        intent=intent,
        type=type,
        sequence=sequence,
        dedupe_key=dedupe_key,
        transition=transition,
        payload=snapshot | {"sequence": sequence},
    )


def event_values(
    intent: PaymentIntent, type: str, sequence: int, dedupe_key: str | None, created_at: datetime
) -> dict[str, Any]:
    """An event's row as `rows.insert_values_cte` writes it, but for its payload and transition (and its
    dedupe key when None), which the statement writing it gives as SQL (the create's events share one
    snapshot parameter)."""
    values = {
        "id": Event._meta.pk.get_default(),
        "merchant_id": intent.merchant_id,
        "intent_id": intent.pk,
        "type": type,
        "sequence": sequence,
        "created_at": created_at,
        "position": None,
    }
    if dedupe_key is not None:
        values["dedupe_key"] = dedupe_key
    return values

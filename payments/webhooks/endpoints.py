"""Endpoint management and replay: the only code that writes endpoints, secrets and replay deliveries."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q

from payments.encryption import SecretUndecryptable, secret_decrypt, secret_encrypt, secret_reencrypt
from payments.errors import Conflict, InvalidRequest, NotFound
from payments.models import Event, Merchant, WebhookDelivery, WebhookEndpoint, WebhookSecret

from . import guard
from .events import EVENT_TYPES
from .signing import secret_generate

log = logging.getLogger(__name__)
MAX_ENDPOINTS_PER_MERCHANT = 16
MAX_ROTATION_OVERLAP = timedelta(days=7)
MAX_REPLAY_EVENTS = 10_000
# Events created this long before an endpoint was disabled are sent when it is enabled again, in case
# their dispatch came after the disable (dispatch runs within seconds; the rest is margin).
RESUME_MARGIN = timedelta(minutes=5)
Reason = WebhookEndpoint.DisabledReason
State = WebhookDelivery.State


def _event_types_clean(event_types: Iterable[str]) -> list[str]:
    types = sorted(set(event_types))
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(
            f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}",
            code="unknown_event_type",
            param="event_types",
        )
    return types


def _url_clean(url: str, resolve: guard.Resolver) -> str:
    if not isinstance(url, str) or len(url) > 2000:
        raise guard.UrlRefused("the webhook URL is a string of at most 2000 characters", param="url")
    guard.destination(url, resolve)
    return url


def endpoint_create(
    *,
    merchant: Merchant,
    url: str,
    event_types: Iterable[str] = (),
    description: str = "",
    now: datetime,
    resolve: guard.Resolver = guard.system_resolve,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its first secret (returned in the clear once, for the merchant to store)."""
    url = _url_clean(url, resolve)
    types = _event_types_clean(event_types)
    with transaction.atomic():
        Merchant.objects.select_for_update().filter(pk=merchant.pk).first()
        live = WebhookEndpoint.objects.filter(merchant=merchant, deleted_at__isnull=True).count()
        if live >= MAX_ENDPOINTS_PER_MERCHANT:
            raise InvalidRequest(
                f"a merchant has at most {MAX_ENDPOINTS_PER_MERCHANT} webhook endpoints",
                code="too_many_endpoints",
            )
        endpoint = WebhookEndpoint.objects.create(
            merchant=merchant, url=url, event_types=types, description=description[:200], created_at=now
        )
        secret = secret_generate()
        WebhookSecret.objects.create(
            endpoint=endpoint, secret_encrypted=secret_encrypt(secret), created_at=now
        )
    return endpoint, secret


def endpoint_get_for_merchant(*, merchant: Merchant, endpoint_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(
        merchant=merchant, pk=endpoint_id, deleted_at__isnull=True
    ).first()
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}", code="endpoint_not_found")
    return endpoint


def endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    now: datetime,
    url: str | None = None,
    event_types: Iterable[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    resolve: guard.Resolver = guard.system_resolve,
) -> WebhookEndpoint:
    # checked before any lock: the URL check resolves the host, which may take a while
    url = _url_clean(url, resolve) if url is not None else None
    types = _event_types_clean(event_types) if event_types is not None else None
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if enabled is True and not endpoint.enabled and endpoint.disabled_reason == Reason.OPERATOR:
            raise Conflict(
                "an operator disabled this endpoint; ask support to enable it",
                code="endpoint_disabled_by_operator",
            )
        if url is not None:
            endpoint.url = url
        if types is not None:
            endpoint.event_types = types
        if description is not None:
            endpoint.description = description[:200]
        endpoint.save()
        if enabled is True and not endpoint.enabled:
            endpoint_enable(endpoint=endpoint, now=now)
        elif enabled is False and endpoint.enabled:
            endpoint_disable(endpoint=endpoint, reason=Reason.MERCHANT, now=now)
    endpoint.refresh_from_db()
    return endpoint


def endpoint_disable(*, endpoint: WebhookEndpoint, reason: str, now: datetime) -> int:
    """Stop sending: the endpoint's pending deliveries pause (they resume when it is enabled again).
    An attempt in flight keeps its lease, and its result is recorded. Returns the number paused. Locks
    the endpoint row, then its deliveries (the order every writer uses)."""
    with transaction.atomic():
        changed = WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
            enabled=False, disabled_reason=reason, disabled_at=now
        )
        if not changed:
            return 0
        return WebhookDelivery.objects.filter(
            endpoint_id=endpoint.pk, state=State.PENDING, claimed_at__isnull=True
        ).update(state=State.PAUSED, next_attempt_at=None)


def endpoint_enable(*, endpoint: WebhookEndpoint, now: datetime) -> int:
    """Send again: paused deliveries are due at once (with their attempt counts kept), and the events
    created while the endpoint was disabled get their deliveries now. Returns the number queued."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.deleted_at is not None:
            raise NotFound(f"no webhook endpoint {endpoint.pk}", code="endpoint_not_found")
        if endpoint.enabled:
            return 0
        disabled_at = endpoint.disabled_at or now
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            enabled=True, disabled_reason="", disabled_at=None, failing_since=None
        )
        resumed = WebhookDelivery.objects.filter(endpoint_id=endpoint.pk, state=State.PAUSED).update(
            state=State.PENDING, next_attempt_at=now
        )
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO payments_webhookdelivery
                    (event_id, endpoint_id, kind, state, attempts, next_attempt_at, requested_by, created_at)
                SELECT ev.id, %(endpoint)s, 'original', 'pending', 0, %(now)s, '', %(now)s
                FROM payments_event ev
                WHERE ev.merchant_id = %(merchant)s AND ev.position IS NOT NULL
                  AND ev.created_at >= %(since)s AND ev.created_at >= %(endpoint_created)s
                  AND (cardinality(%(types)s::text[]) = 0 OR ev.type = ANY(%(types)s::text[]))
                ON CONFLICT (event_id, endpoint_id) WHERE kind = 'original' DO NOTHING
                """,
                {
                    "endpoint": endpoint.pk,
                    "merchant": endpoint.merchant_id,
                    "now": now,
                    "since": disabled_at - RESUME_MARGIN,
                    "endpoint_created": endpoint.created_at,
                    "types": endpoint.event_types,
                },
            )
            return resumed + cursor.rowcount


def endpoint_delete(*, endpoint: WebhookEndpoint, now: datetime) -> None:
    """Hide the endpoint and stop its deliveries; its delivery log stays for support and audits."""
    with transaction.atomic():
        endpoint_disable(endpoint=endpoint, reason=Reason.MERCHANT, now=now)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(deleted_at=now)


def endpoint_secret_rotate(*, endpoint: WebhookEndpoint, overlap: timedelta, now: datetime) -> str:
    """A new current secret; the secrets still valid now expire after `overlap` (both sign until then)."""
    if overlap < timedelta(0) or overlap > MAX_ROTATION_OVERLAP:
        raise InvalidRequest(
            f"the overlap is between 0 and {MAX_ROTATION_OVERLAP.days} days", code="invalid_overlap"
        )
    secret = secret_generate()
    ends = now + overlap
    with transaction.atomic():
        WebhookEndpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
        # every secret still signing stops at the end of this overlap at the latest (an older rotation's
        # longer overlap is cut short too)
        WebhookSecret.objects.filter(endpoint=endpoint).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=ends)
        ).update(expires_at=ends)
        WebhookSecret.objects.create(
            endpoint=endpoint, secret_encrypted=secret_encrypt(secret), created_at=now
        )
    return secret


def secrets_active(endpoint_ids: Iterable[str], now: datetime) -> dict[str, list[str]]:
    """Per endpoint, the secrets that sign a message sent now: the current one first."""
    found: dict[str, list[str]] = {}
    rows = (
        WebhookSecret.objects.filter(endpoint_id__in=list(endpoint_ids))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("endpoint_id", "-created_at", "-id")
        .values_list("endpoint_id", "secret_encrypted")
    )
    for endpoint_id, token in rows:
        try:
            secret = secret_decrypt(token)
        except SecretUndecryptable as exc:  # an operator's key error: this endpoint fails, the others go on
            log.error("webhook endpoint %s: %s", endpoint_id, exc)
            continue
        found.setdefault(endpoint_id, []).append(secret)
    return found


def secrets_reencrypt(*, batch_size: int = 500) -> int:
    """Re-encrypt every stored signing secret (expired ones and rotation overlaps included) under the
    first key of GATEWAY_SECRETS_KEYS; afterwards the other keys can be removed. Idempotent: returns
    how many were rewritten. Each batch is one transaction, locked against a concurrent rotation."""
    done = 0
    last_id = 0
    while True:
        with transaction.atomic():
            batch = list(
                WebhookSecret.objects.select_for_update()
                .filter(id__gt=last_id)
                .order_by("id")
                .only("id", "secret_encrypted")[:batch_size]
            )
            if not batch:
                return done
            for row in batch:
                row.secret_encrypted = secret_reencrypt(row.secret_encrypted)
            WebhookSecret.objects.bulk_update(batch, ["secret_encrypted"])
        done += len(batch)
        last_id = batch[-1].id


def event_redeliver(
    *, event: Event, now: datetime, requested_by: str, endpoint: WebhookEndpoint | None = None
) -> list[WebhookDelivery]:
    """A new delivery of the event (same `webhook-id`) to one endpoint, or to every enabled endpoint of
    the merchant that subscribes to its type."""
    if endpoint is not None:
        if endpoint.merchant_id != event.merchant_id or endpoint.deleted_at is not None:
            raise NotFound(f"no webhook endpoint {endpoint.pk}", code="endpoint_not_found")
        if not endpoint.enabled:
            raise InvalidRequest("the endpoint is disabled; enable it first", code="endpoint_disabled")
        targets = [endpoint]
    else:
        targets = [
            e
            for e in WebhookEndpoint.objects.filter(
                merchant_id=event.merchant_id, enabled=True, deleted_at__isnull=True
            )
            if not e.event_types or event.type in e.event_types
        ]
    if not targets:
        raise InvalidRequest("no enabled endpoint subscribes to this event", code="no_endpoint")
    return WebhookDelivery.objects.bulk_create([_replay(event.pk, e.pk, now, requested_by) for e in targets])


def endpoint_replay(
    *, endpoint: WebhookEndpoint, since: datetime, until: datetime, now: datetime, requested_by: str
) -> int:
    """Replay every event of the endpoint's merchant created in [since, until) that it subscribes to,
    oldest first. Returns the number of deliveries queued."""
    if not endpoint.enabled:
        raise InvalidRequest("the endpoint is disabled; enable it first", code="endpoint_disabled")
    if until <= since:
        raise InvalidRequest("the range's end must be after its start", code="invalid_range")
    events = Event.objects.filter(
        merchant_id=endpoint.merchant_id, created_at__gte=since, created_at__lt=until
    ).order_by("created_at", "intent_id", "sequence")
    if endpoint.event_types:
        events = events.filter(type__in=endpoint.event_types)
    if events[MAX_REPLAY_EVENTS : MAX_REPLAY_EVENTS + 1].exists():
        raise InvalidRequest(
            f"the range holds more than {MAX_REPLAY_EVENTS} events; replay it in smaller ranges",
            code="replay_too_large",
        )
    with transaction.atomic():  # all of the range or none of it
        queued = 0
        batch: list[WebhookDelivery] = []
        for event_pk in events.values_list("pk", flat=True).iterator(chunk_size=2000):
            batch.append(_replay(event_pk, endpoint.pk, now, requested_by))
            if len(batch) == 2000:
                queued += len(WebhookDelivery.objects.bulk_create(batch))
                batch = []
        queued += len(WebhookDelivery.objects.bulk_create(batch))
    return queued


def _replay(event_pk: str, endpoint_pk: str, now: datetime, requested_by: str) -> WebhookDelivery:
    return WebhookDelivery(
        event_id=event_pk,
        endpoint_id=endpoint_pk,
        kind=WebhookDelivery.Kind.REPLAY,
        state=State.PENDING,
        next_attempt_at=now,
        requested_by=requested_by[:120],
        created_at=now,
    )

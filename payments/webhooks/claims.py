"""Claims: a worker takes due deliveries (`claims_take`) and gives back those it did not send
(`claims_release`).

A claim counts the attempt and sets its lease (`next_attempt_at` = now + lease) in the statement that
takes the rows with `FOR UPDATE SKIP LOCKED`: two workers never take the same attempt, and a worker that
dies mid-attempt leaves a delivery that is due again when its lease ends (the next claim logs the lost
attempt as `lost`). A claim not sent (the drain's time is up, the endpoint was
disabled, or its lease ran short while it waited in the worker's queue) is released: the row goes back
to exactly what it was before the claim, as if it had never been taken.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from gateway.metrics import WEBHOOK_ATTEMPTS
from payments.models import WebhookAttempt, WebhookEndpoint

from .endpoints import secrets_active
from .events import event_body_from

LOST_ERROR = "the worker stopped during this attempt; its result is unknown"
# A delivery whose last attempt was lost with its worker gets up to this many attempts beyond the
# schedule: a claim counts its attempt before it is sent, so a worker killed with claims queued loses
# attempts it never made, and a final attempt lost that way must not fail the delivery unsent.
LOST_GRACE = 2


def retry_schedule() -> tuple[timedelta, ...]:
    """Delay before each attempt, counted from the previous one (the first is 0: at once)."""
    return tuple(timedelta(seconds=s) for s in settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S)


def lease() -> timedelta:
    """How long a claimed attempt is a worker's: longer than any attempt can take, plus the time a
    claim may wait in the worker's queue (a claim whose lease runs short there is released unsent)."""
    return timedelta(seconds=2 * settings.GATEWAY_WEBHOOK_TIMEOUT_S + 30)


class ClaimBatch(list):
    """The claims taken; `spent` counts the rows the statement took and failed instead (out of attempts,
    the last one lost), so that "nothing to send" is not read as "nothing was due"."""

    spent: int = 0


@dataclass
class Claim:
    """One attempt a worker holds until `lease_end`. `started_at` is set when it is sent (the record
    takes `claimed_at` when it was sent at the claim's time, as `deliver_due` does)."""

    delivery_id: int
    attempt: int
    url: str
    endpoint_id: str
    msg_id: str
    body: bytes
    secrets: list[str]
    lost_attempt_started: datetime | None  # the previous attempt, when its worker stopped mid-attempt
    claimed_at: datetime
    due_at: datetime | None = None  # the row's next_attempt_at before the claim (restored on release)
    lease_end: datetime | None = None
    started_at: datetime | None = None


class EndpointCache:
    """URLs and active secrets of endpoints, read again after `ttl_s` (0: at every claim). A rotation or
    URL change reaches a running drain within a second."""

    def __init__(self, ttl_s: float = 0.0):
        self.ttl_s = ttl_s
        self._found: dict[str, tuple[float, str, list[str]]] = {}

    def get(self, endpoint_ids: set[str], now: datetime) -> dict[str, tuple[str, list[str]]]:
        fresh_after = time.monotonic() - self.ttl_s
        stale = {e for e in endpoint_ids if e not in self._found or self._found[e][0] <= fresh_after}
        if stale:
            urls = dict(WebhookEndpoint.objects.filter(pk__in=stale).values_list("pk", "url"))
            secrets = secrets_active(stale, now)
            read_at = time.monotonic()
            for endpoint_id in stale:
                self._found[endpoint_id] = (read_at, urls.get(endpoint_id, ""), secrets.get(endpoint_id, []))
        return {e: self._found[e][1:] for e in endpoint_ids}


def claims_take(
    *,
    now: datetime,
    limit: int,
    wants: Mapping[str, int] | None = None,
    endpoints: EndpointCache | None = None,
) -> ClaimBatch:
    """Take up to `limit` due deliveries (attempt counted, lease set) in one statement, oldest due first:
    for each endpoint in `wants` at most that many, for any other GATEWAY_WEBHOOK_PER_ENDPOINT. Each
    endpoint's due deliveries are looked up on their own, so a long queue for one is no wall for the
    others. A delivery whose last attempt was lost with its worker is taken again, up to LOST_GRACE
    attempts beyond the schedule (a lost attempt may never have been sent); past that it fails here,
    with its lost attempt logged, in the same statement."""
    if limit <= 0:
        return ClaimBatch()
    wants = wants or {}
    # One transaction with the reads that complete the claims: a connection lost before they are read
    # rolls the claims back (committed and unknown to the drain, they would be lost attempts).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            WITH wanted AS (
                SELECT * FROM unnest(%(want_ids)s::text[], %(want_counts)s::int[]) AS w(endpoint_id, n)
            ), due AS (
                SELECT d.id, d.claimed_at AS lost_claim, d.next_attempt_at,
                       -- out of attempts: the schedule's, and LOST_GRACE more when the last one was lost
                       d.attempts >= %(max_attempts)s
                       AND (d.claimed_at IS NULL OR d.attempts >= %(max_attempts)s + %(lost_grace)s) AS spent
                FROM payments_webhookendpoint e
                LEFT JOIN wanted ON wanted.endpoint_id = e.id
                CROSS JOIN LATERAL (
                    SELECT id, claimed_at, next_attempt_at, attempts FROM payments_webhookdelivery
                    WHERE endpoint_id = e.id AND state = 'pending' AND next_attempt_at <= %(now)s
                    ORDER BY next_attempt_at, id
                    LIMIT greatest(coalesce(wanted.n, %(per_endpoint)s), 0)
                    FOR UPDATE SKIP LOCKED
                ) d
                WHERE e.enabled AND e.deleted_at IS NULL
                ORDER BY d.next_attempt_at, d.id
                LIMIT %(limit)s
            ), taken AS (
                UPDATE payments_webhookdelivery d
                SET attempts = CASE WHEN due.spent THEN d.attempts ELSE d.attempts + 1 END,
                    state = CASE WHEN due.spent THEN 'failed' ELSE d.state END,
                    claimed_at = CASE WHEN due.spent THEN NULL ELSE %(now)s END,
                    next_attempt_at = CASE WHEN due.spent THEN NULL ELSE %(lease_end)s END
                FROM due
                WHERE d.id = due.id
                RETURNING d.id, d.attempts, d.endpoint_id, due.lost_claim, due.next_attempt_at AS due_at,
                          d.state, d.event_id
            ), lost AS (
                -- the previous attempt's worker stopped before recording it: logged now (the number of
                -- a delivery that ran out is its last attempt's, unchanged)
                INSERT INTO payments_webhookattempt
                    (delivery_id, number, started_at, outcome, error, response_excerpt)
                SELECT id, CASE WHEN state = 'failed' THEN attempts ELSE attempts - 1 END, lost_claim, 'lost',
                       %(lost_error)s, ''
                FROM taken WHERE lost_claim IS NOT NULL
                ON CONFLICT (delivery_id, number) DO NOTHING
                RETURNING delivery_id
            )
            SELECT t.id, t.attempts, t.endpoint_id, t.lost_claim, t.due_at, t.state = 'failed',
                   EXISTS (SELECT 1 FROM lost WHERE lost.delivery_id = t.id),
                   ev.id, ev.type, ev.created_at, CASE WHEN t.state <> 'failed' THEN ev.payload::text END
            FROM taken t JOIN payments_event ev ON ev.id = t.event_id
            ORDER BY t.due_at, t.id
            """,
            {
                "now": now,
                "limit": limit,
                "lease_end": now + lease(),
                "per_endpoint": settings.GATEWAY_WEBHOOK_PER_ENDPOINT,
                "max_attempts": len(retry_schedule()),
                "lost_grace": LOST_GRACE,
                "want_ids": list(wants),
                "want_counts": list(wants.values()),
                "lost_error": LOST_ERROR,
            },
        )
        taken = cursor.fetchall()
        lost = sum(row[6] for row in taken)
        if lost:
            transaction.on_commit(lambda: WEBHOOK_ATTEMPTS.labels(WebhookAttempt.Outcome.LOST).inc(lost))
        rows = [row[:5] + row[7:] for row in taken if not row[5]]  # those out of attempts failed: not sent
        claims = ClaimBatch()
        claims.spent = len(taken) - len(rows)
        if not rows:
            return claims
        found = (endpoints or EndpointCache()).get({r[2] for r in rows}, now)
    lease_end = now + lease()
    bodies: dict[str, bytes] = {}
    for delivery_id, attempt, endpoint_id, lost_claim, due_at, event_pk, type_, created_at, payload in rows:
        if event_pk not in bodies:
            bodies[event_pk] = event_body_from(event_pk, type_, created_at, payload)
        url, secrets = found[endpoint_id]
        claims.append(
            Claim(
                delivery_id=delivery_id,
                attempt=attempt,
                url=url,
                endpoint_id=endpoint_id,
                msg_id=event_pk,
                body=bodies[event_pk],
                secrets=secrets,
                lost_attempt_started=lost_claim,
                claimed_at=now,
                due_at=due_at,
                lease_end=lease_end,
            )
        )
    return claims


def claims_release(claims: list[Claim]) -> int:
    """Give back claims that were not sent: each row is again what it was before its claim (attempt
    count, due time, a lost attempt's lease start), or paused if its endpoint was disabled meanwhile.
    A claim whose lease another worker has taken over since is left alone. Returns how many."""
    if not claims:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE payments_webhookdelivery d
            SET attempts = d.attempts - 1, claimed_at = v.lost_claim,
                state = CASE WHEN e.enabled THEN 'pending' ELSE 'paused' END,
                next_attempt_at = CASE WHEN e.enabled THEN v.due END
            FROM unnest(%s::bigint[], %s::int[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[])
                     AS v(id, attempt, claimed, lost_claim, due),
                 payments_webhookendpoint e
            WHERE d.id = v.id AND d.attempts = v.attempt AND d.state = 'pending'
              AND d.claimed_at = v.claimed AND e.id = d.endpoint_id
            """,
            [
                [c.delivery_id for c in claims],
                [c.attempt for c in claims],
                [c.claimed_at for c in claims],
                [c.lost_attempt_started for c in claims],
                [c.due_at for c in claims],
            ],
        )
        return cursor.rowcount


def endpoints_stopped(endpoint_ids: set[str]) -> set[str]:
    """Those of the endpoints that are disabled or deleted now (their queued claims are released)."""
    if not endpoint_ids:
        return set()
    return set(
        WebhookEndpoint.objects.filter(pk__in=endpoint_ids)
        .exclude(enabled=True, deleted_at__isnull=True)
        .values_list("pk", flat=True)
    )

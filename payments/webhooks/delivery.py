"""Delivery from the outbox: dispatch, claim, send, record.

1. **Dispatch** (`events_dispatch`): new events get their merchant-visible `position` and one delivery
   per enabled endpoint that subscribes to their type. Dispatches are serialised by an advisory lock, so
   positions grow in commit order.
2. **Claim** (`_claim`): a worker takes due deliveries with `FOR UPDATE SKIP LOCKED` and, in the same
   statement, counts the attempt and sets its lease (`next_attempt_at` = now + lease). Two workers never
   take the same attempt; a worker that dies mid-attempt leaves a delivery that is due again when its
   lease ends (the lost attempt is logged as `lost`).
3. **Send** outside any transaction, on a thread pool, each event signed with the endpoint's active
   secrets; one slow or failing endpoint holds up only its own attempts.
4. **Record** (`_record`): one attempt row per result; the delivery is delivered, failed (410, or no
   attempts left) or due again per the retry schedule; the endpoint's health is updated, and an endpoint
   that answers 410 or has failed for longer than `GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS` is disabled.
   A result whose lease was taken over by another worker changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from gateway.metrics import WEBHOOK_ATTEMPT_SECONDS, WEBHOOK_ATTEMPTS
from payments.models import WebhookAttempt, WebhookEndpoint

from .endpoints import Reason, State, endpoint_disable, secrets_active
from .events import event_body_from
from .signing import signed_headers
from .transport import Result, Transport

log = logging.getLogger(__name__)
_DISPATCH_LOCK = 0x77686B31  # pg advisory lock key ("whk1")
RECORD_GATHER_S = 0.003
DISPATCH_IDLE_S = 0.5
LOST_ERROR = "the worker stopped during this attempt; its result is unknown"


def retry_schedule() -> tuple[timedelta, ...]:
    """Delay before each attempt, counted from the previous one (the first is 0: at once)."""
    return tuple(timedelta(seconds=s) for s in settings.GATEWAY_WEBHOOK_RETRY_SCHEDULE_S)


def lease() -> timedelta:
    """How long a claimed attempt is a worker's: longer than any attempt can take."""
    return timedelta(seconds=2 * settings.GATEWAY_WEBHOOK_TIMEOUT_S + 30)


# --- dispatch --------------------------------------------------------------------------------------------


def events_dispatch(*, now: datetime, batch: int = 1000, wait_for_lock: bool = True) -> int:
    """Give up to `batch` undispatched events their positions and deliveries. Returns how many."""
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if wait_for_lock:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_DISPATCH_LOCK])
        else:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_DISPATCH_LOCK])
            if not cursor.fetchone()[0]:
                return 0
        # A new statement, so a snapshot taken after the lock: it sees the positions given by the
        # dispatch we may have waited for.
        cursor.execute(
            """
            WITH batch AS (
                SELECT id, merchant_id, type, created_at,
                       row_number() OVER (ORDER BY created_at, intent_id, sequence) AS rn
                FROM payments_event
                WHERE position IS NULL
                ORDER BY created_at, intent_id, sequence
                LIMIT %(batch)s
            ), base AS (
                SELECT coalesce(max(position), 0) AS last FROM payments_event
            ), numbered AS (
                UPDATE payments_event e SET position = base.last + batch.rn
                FROM batch, base WHERE e.id = batch.id
                RETURNING e.id
            ), deliveries AS (
                INSERT INTO payments_webhookdelivery
                    (event_id, endpoint_id, kind, state, attempts, next_attempt_at, requested_by, created_at)
                SELECT batch.id, ep.id, 'original', 'pending', 0, %(now)s, '', %(now)s
                FROM batch
                JOIN payments_webhookendpoint ep
                  ON ep.merchant_id = batch.merchant_id
                 AND ep.enabled AND ep.deleted_at IS NULL
                 AND ep.created_at <= batch.created_at
                 AND (cardinality(ep.event_types) = 0 OR batch.type = ANY(ep.event_types))
                ON CONFLICT (event_id, endpoint_id) WHERE kind = 'original' DO NOTHING
            )
            SELECT count(*) FROM numbered
            """,
            {"batch": batch, "now": now},
        )
        return cursor.fetchone()[0]


# --- claim, send, record ---------------------------------------------------------------------------------


@dataclass
class Claim:
    delivery_id: int
    attempt: int
    url: str
    endpoint_id: str
    msg_id: str
    body: bytes
    secrets: list[str]
    lost_attempt_started: datetime | None  # the previous attempt, when its worker stopped mid-attempt
    claimed_at: datetime = field(default_factory=timezone.now)


class _Endpoints:
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


def _claim(
    *,
    now: datetime,
    limit: int,
    in_flight: Mapping[str, int] | None = None,
    endpoints: _Endpoints | None = None,
) -> list[Claim]:
    """Take up to `limit` due deliveries (attempt counted, lease set) in one statement, oldest due first,
    but at most GATEWAY_WEBHOOK_PER_ENDPOINT per endpoint counting the `in_flight` ones: an endpoint
    with a backlog, slow or timing out, cannot take every thread, nor starve the others' deliveries
    (each endpoint's due deliveries are looked up on their own, so a long queue for one is no wall).
    Runs in the caller's transaction."""
    if limit <= 0:
        return []
    in_flight = in_flight or {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH busy AS (
                SELECT * FROM unnest(%(busy_ids)s::text[], %(busy_counts)s::int[]) AS b(endpoint_id, n)
            ), due AS (
                SELECT d.id, d.claimed_at AS lost_claim, d.next_attempt_at
                FROM payments_webhookendpoint e
                LEFT JOIN busy ON busy.endpoint_id = e.id
                CROSS JOIN LATERAL (
                    SELECT id, claimed_at, next_attempt_at FROM payments_webhookdelivery
                    WHERE endpoint_id = e.id AND state = 'pending' AND next_attempt_at <= %(now)s
                    ORDER BY next_attempt_at, id
                    LIMIT greatest(%(per_endpoint)s - coalesce(busy.n, 0), 0)
                    FOR UPDATE SKIP LOCKED
                ) d
                WHERE e.enabled AND e.deleted_at IS NULL
                ORDER BY d.next_attempt_at, d.id
                LIMIT %(limit)s
            )
            UPDATE payments_webhookdelivery d
            SET attempts = CASE WHEN d.attempts >= %(max_attempts)s THEN d.attempts ELSE d.attempts + 1 END,
                state = CASE WHEN d.attempts >= %(max_attempts)s THEN 'failed' ELSE d.state END,
                claimed_at = CASE WHEN d.attempts >= %(max_attempts)s THEN NULL ELSE %(now)s END,
                next_attempt_at = CASE WHEN d.attempts >= %(max_attempts)s THEN NULL ELSE %(lease_end)s END
            FROM due, payments_event ev
            WHERE d.id = due.id AND ev.id = d.event_id
            RETURNING d.id, d.attempts, d.endpoint_id, due.lost_claim, ev.id, ev.type, ev.created_at,
                      ev.payload, d.state
            """,
            {
                "now": now,
                "limit": limit,
                "lease_end": now + lease(),
                "per_endpoint": settings.GATEWAY_WEBHOOK_PER_ENDPOINT,
                "max_attempts": len(retry_schedule()),
                "busy_ids": list(in_flight),
                "busy_counts": list(in_flight.values()),
            },
        )
        rows = cursor.fetchall()
    exhausted = [r for r in rows if r[8] == State.FAILED]
    if exhausted:
        # the last attempt was lost with its worker: it counts; nothing is sent beyond the schedule
        WebhookAttempt.objects.bulk_create(
            [_lost_attempt(r[0], r[1], r[3]) for r in exhausted], ignore_conflicts=True
        )
        rows = [r for r in rows if r[8] != State.FAILED]
    if not rows:
        return []
    found = (endpoints or _Endpoints()).get({r[2] for r in rows}, now)
    bodies: dict[str, bytes] = {}
    claims = []
    for delivery_id, attempt, endpoint_id, lost_claim, event_pk, type_, created_at, payload, _ in rows:
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
            )
        )
    return claims


def _lost_attempt(delivery_id: int, number: int, started: datetime) -> WebhookAttempt:
    return WebhookAttempt(
        delivery_id=delivery_id,
        number=number,
        started_at=started,
        outcome=WebhookAttempt.Outcome.LOST,
        error=LOST_ERROR,
    )


def _send(claim: Claim, transport: Transport) -> Result:
    """One HTTP attempt (no database access: runs on a worker thread). Never raises: whatever goes
    wrong is this attempt's error, and the worker goes on."""
    if not claim.secrets:
        return Result(None, 0, error="the endpoint has no active signing secret")
    try:
        headers = signed_headers(
            secrets=claim.secrets, msg_id=claim.msg_id, timestamp=int(time.time()), body=claim.body
        )
        return transport.post(claim.url, claim.body, headers)
    except Exception as exc:
        return Result(None, 0, error=f"{type(exc).__name__}: {exc}"[:300])


def _record(results: list[tuple[Claim, Result]], *, now: datetime) -> None:
    """Write the attempts and move each delivery and endpoint on, in the caller's transaction. Endpoint
    rows are written before delivery rows, the order `endpoint_disable` locks them in (no deadlock)."""
    schedule = retry_schedule()
    attempts: list[WebhookAttempt] = []
    updates: list[tuple[int, int, str, datetime | None, int | None, datetime | None]] = []
    health: dict[str, str] = {}  # endpoint -> "ok" | "failing" | "gone"
    for claim, result in results:
        if claim.lost_attempt_started is not None:
            attempts.append(_lost_attempt(claim.delivery_id, claim.attempt - 1, claim.lost_attempt_started))
        attempts.append(
            WebhookAttempt(
                delivery_id=claim.delivery_id,
                number=claim.attempt,
                started_at=claim.claimed_at,
                latency_ms=result.latency_ms,
                status_code=result.status,
                outcome=WebhookAttempt.Outcome.SUCCEEDED if result.ok else WebhookAttempt.Outcome.FAILED,
                error=result.error,
                response_excerpt=result.excerpt,
            )
        )
        if result.ok:
            updates.append((claim.delivery_id, claim.attempt, State.DELIVERED, None, result.status, now))
            health[claim.endpoint_id] = "ok"
            continue
        gone = result.status == 410
        if gone or claim.attempt >= len(schedule):
            updates.append((claim.delivery_id, claim.attempt, State.FAILED, None, result.status, None))
        else:
            due = now + schedule[claim.attempt]
            updates.append((claim.delivery_id, claim.attempt, State.PENDING, due, result.status, None))
        if gone:
            health[claim.endpoint_id] = "gone"
        else:
            health.setdefault(claim.endpoint_id, "failing")
    _endpoints_health(health, now=now)
    applied = _deliveries_update(updates)
    # the attempts of results applied (a result that lost its lease is dropped with its attempt)
    kept = [a for a in attempts if a.delivery_id in applied]
    WebhookAttempt.objects.bulk_create(kept, ignore_conflicts=True)
    transaction.on_commit(partial(_attempts_count, kept))


def _attempts_count(attempts: list[WebhookAttempt]) -> None:
    for attempt in attempts:
        WEBHOOK_ATTEMPTS.labels(attempt.outcome).inc()
        if attempt.latency_ms is not None and attempt.outcome != WebhookAttempt.Outcome.LOST:
            WEBHOOK_ATTEMPT_SECONDS.observe(attempt.latency_ms / 1000)


def _deliveries_update(updates: list[tuple]) -> set[int]:
    """Apply results whose lease is still ours (same attempt number, still pending). Returns the ids of
    the deliveries updated."""
    if not updates:
        return set()
    ids, numbers, states, dues, codes, delivered = (list(column) for column in zip(*updates, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE payments_webhookdelivery d
            SET state = CASE WHEN v.state = 'pending' AND NOT e.enabled THEN 'paused' ELSE v.state END,
                next_attempt_at = CASE WHEN e.enabled THEN v.due END,
                claimed_at = NULL, last_status_code = v.code, delivered_at = v.delivered
            FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::timestamptz[], %s::int[],
                        %s::timestamptz[]) AS v(id, attempt, state, due, code, delivered),
                 payments_webhookendpoint e
            WHERE d.id = v.id AND d.attempts = v.attempt AND d.state = 'pending' AND d.claimed_at IS NOT NULL
              AND e.id = d.endpoint_id
            RETURNING d.id
            """,
            [ids, numbers, [str(s) for s in states], dues, codes, delivered],
        )
        return {row[0] for row in cursor.fetchall()}


def _endpoints_health(health: dict[str, str], *, now: datetime) -> None:
    ok = [e for e, h in health.items() if h == "ok"]
    failing = [e for e, h in health.items() if h == "failing"]
    gone = [e for e, h in health.items() if h == "gone"]
    if ok:  # at most one write per endpoint a second while it is healthy (busy endpoints, many workers)
        WebhookEndpoint.objects.filter(pk__in=ok).filter(
            Q(failing_since__isnull=False)
            | Q(last_success_at__isnull=True)
            | Q(last_success_at__lt=now - timedelta(seconds=1))
        ).update(failing_since=None, last_success_at=now)
    if failing:
        WebhookEndpoint.objects.filter(pk__in=failing, failing_since__isnull=True).update(failing_since=now)
        cutoff = now - timedelta(hours=settings.GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS)
        for endpoint in WebhookEndpoint.objects.filter(
            pk__in=failing, enabled=True, failing_since__lte=cutoff
        ):
            endpoint_disable(endpoint=endpoint, reason=Reason.FAILING, now=now)
    for endpoint in WebhookEndpoint.objects.filter(pk__in=gone, enabled=True):
        endpoint_disable(endpoint=endpoint, reason=Reason.GONE, now=now)


# --- running ---------------------------------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_transport: Transport | None = None
_shared_lock = threading.Lock()
_drain_lock = threading.Lock()


def _shared() -> tuple[ThreadPoolExecutor, Transport]:
    """One thread pool and one set of connection pools per process (created after a fork; a Celery
    worker with the threads pool shares them between its drains)."""
    global _executor, _transport
    with _shared_lock:
        if _executor is None or _transport is None:
            size = settings.GATEWAY_WEBHOOK_CONCURRENCY
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="webhook")
            _transport = Transport(timeout_s=settings.GATEWAY_WEBHOOK_TIMEOUT_S, pool_size=size)
        return _executor, _transport


def deliver_due(*, now: datetime, transport: Transport | None = None, limit: int | None = None) -> int:
    """Dispatch, then make every attempt due at `now`, batch by batch, and record them; returns the
    number of attempts. Tests drive the clock with `now`; `deliveries_drain` is the production loop."""
    executor, shared_transport = _shared()
    transport = transport or shared_transport
    size = limit or settings.GATEWAY_WEBHOOK_CONCURRENCY
    total = 0
    while True:
        events_dispatch(now=now)
        with transaction.atomic():
            claims = _claim(now=now, limit=size)
        if not claims:
            return total
        results = list(executor.map(lambda c: _send(c, transport), claims))
        with transaction.atomic():
            _record(list(zip(claims, results, strict=True)), now=now)
        total += len(claims)


@dataclass
class DrainReport:
    dispatched: int = 0
    attempts: int = 0
    delivered: int = 0


def deliveries_drain(
    *, budget_s: float, clock: Callable[[], datetime] = timezone.now, transport: Transport | None = None
) -> DrainReport:
    """The worker loop: keep the thread pool busy with due attempts for up to `budget_s` seconds, or
    until nothing is due. Results are recorded as they complete (a slow endpoint holds back only its own
    attempts), in the same transaction as the next claim, which is made when half the threads are free.
    New events are dispatched while there are some, and looked for twice a second otherwise.

    One drain per process at a time (a second one returns at once): the thread pool and the per-endpoint
    counts are the process's, and a claim's lease starts when its attempt can start."""
    if not _drain_lock.acquire(blocking=False):
        return DrainReport()
    try:
        return _drain(budget_s=budget_s, clock=clock, transport=transport)
    finally:
        _drain_lock.release()


def _drain(*, budget_s: float, clock: Callable[[], datetime], transport: Transport | None) -> DrainReport:
    executor, shared_transport = _shared()
    transport = transport or shared_transport
    size = settings.GATEWAY_WEBHOOK_CONCURRENCY
    report = DrainReport()
    deadline = time.monotonic() + budget_s
    in_flight: dict[Future, Claim] = {}
    per_endpoint: Counter[str] = Counter()
    endpoints = _Endpoints(ttl_s=1.0)
    next_dispatch = 0.0
    results: list[tuple[Claim, Result]] = []
    while True:
        free = size - len(in_flight)
        want = time.monotonic() < deadline and (not in_flight or free * 2 >= size)
        if want and time.monotonic() >= next_dispatch:
            dispatched = _retrying(lambda: events_dispatch(now=clock(), wait_for_lock=False))
            report.dispatched += dispatched
            next_dispatch = 0.0 if dispatched else time.monotonic() + DISPATCH_IDLE_S
        claims: list[Claim] = []
        if results or want:
            claims = _retrying(
                partial(
                    _record_and_claim,
                    results=results,
                    limit=free if want else 0,
                    in_flight=+per_endpoint,
                    endpoints=endpoints,
                    clock=clock,
                )
            )
        for claim in claims:
            in_flight[executor.submit(_send, claim, transport)] = claim
            per_endpoint[claim.endpoint_id] += 1
        if not in_flight:
            return report
        done, pending = wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)
        if done and pending and len(done) * 4 < len(in_flight):
            # fast answers come in groups: a few milliseconds more make fewer, larger writes
            more, _ = wait(pending, timeout=RECORD_GATHER_S, return_when=ALL_COMPLETED)
            done |= more
        results = [(in_flight.pop(f), f.result()) for f in done]
        for claim, result in results:
            per_endpoint[claim.endpoint_id] -= 1
            report.attempts += 1
            report.delivered += result.ok


def _record_and_claim(
    *,
    results: list[tuple[Claim, Result]],
    limit: int,
    in_flight: Mapping[str, int],
    endpoints: _Endpoints,
    clock: Callable[[], datetime],
) -> list[Claim]:
    with transaction.atomic():
        now = clock()
        if results:
            _record(results, now=now)
        return _claim(now=now, limit=limit, in_flight=in_flight, endpoints=endpoints)


def _retrying(work: Callable[[], Any], tries: int = 3) -> Any:
    """Run a transaction again after a deadlock or serialization failure (the drain keeps its results:
    dying here would send them all again after their leases)."""
    for attempt in range(tries):
        try:
            return work()
        except OperationalError as exc:
            if attempt == tries - 1:
                raise
            log.warning("webhook drain: retrying after %s", exc)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")

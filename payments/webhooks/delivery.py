"""Delivery from the outbox: dispatch, claim, send, record.

1. **Dispatch** (`events_dispatch`): new events get their merchant-visible `position` and one delivery
   per enabled endpoint that subscribes to their type. Dispatches are serialised by an advisory lock, so
   positions grow in commit order.
2. **Claim** (`claims.claims_take`): a worker takes due deliveries with `FOR UPDATE SKIP LOCKED` and, in
   the same statement, counts the attempt and sets its lease. Two workers never take the same attempt; a
   worker that dies mid-attempt leaves a delivery that is due again when its lease ends (the lost
   attempt is logged as `lost`). Claims not sent are released (`claims.claims_release`).
3. **Send** outside any transaction, on a thread pool, each event signed with the endpoint's active
   secrets; at most GATEWAY_WEBHOOK_PER_ENDPOINT attempts in flight per endpoint and process, so one
   slow or failing endpoint holds up only its own attempts (`pipeline.Pipeline`).
4. **Record** (`recorder.results_record`): one attempt row per result, in one statement per batch; the
   delivery is delivered, failed (410, or no attempts left) or due again per the retry schedule; the
   endpoint's health is updated, and an endpoint that answers 410 or has failed for longer than
   `GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS` is disabled. A result whose lease was taken over by another
   worker changes nothing.

The drain (`deliveries_drain`) runs the database work on its own thread, ahead of the senders: claims
queued per endpoint, results recorded in batches, so a sender never waits for the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from .claims import (
    LOST_ERROR,
    Claim,
    EndpointCache,
    claims_release,
    claims_take,
    endpoints_stopped,
    lease,
    retry_schedule,
)
from .pipeline import Pipeline
from .recorder import HealthWrites, results_record
from .signing import signed_headers
from .transport import Result, Transport

log = logging.getLogger(__name__)
_DISPATCH_LOCK = 0x77686B31  # pg advisory lock key ("whk1")
DISPATCH_IDLE_S = 0.5
FLUSH_S = 0.1  # results wait at most about this long to be recorded
POLL_S = 0.1  # due deliveries of endpoints this drain has not seen yet are looked for this often
STOPPED_CHECK_S = 1.0  # endpoints with queued claims are checked for a disable this often
MAX_QUEUED = 2048  # claims queued or in flight in the process, at most

__all__ = [
    "LOST_ERROR",
    "Claim",
    "DrainReport",
    "deliver_due",
    "deliveries_drain",
    "events_dispatch",
    "lease",
    "retry_schedule",
]


def _claim(*, now: datetime, limit: int, **kwargs: Any) -> list[Claim]:
    """`claims_take` (the tests' name for it)."""
    return claims_take(now=now, limit=limit, **kwargs)


def _record(results: list[tuple[Claim, Result]], *, now: datetime) -> None:
    """`results_record` (the tests' name for it)."""
    results_record(results, now=now)


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


# --- send ------------------------------------------------------------------------------------------------


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


# --- running ---------------------------------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_transport: Transport | None = None
_shared_lock = threading.Lock()
_drain_lock = threading.Lock()
_endpoint_rates: dict[str, float] = {}  # each endpoint's recent sending rate, kept from drain to drain


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
    send = partial(_send, transport=transport or shared_transport)
    size = limit or settings.GATEWAY_WEBHOOK_CONCURRENCY
    total = 0
    while True:
        events_dispatch(now=now)
        claims = claims_take(now=now, limit=size)
        if not claims:
            return total
        results = list(executor.map(send, claims))
        results_record(list(zip(claims, results, strict=True)), now=now)
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
    until nothing is due, then release what is still queued and return once the attempts in flight are
    recorded. This thread does all the database work (dispatch, claims ahead, records in batches,
    releases); the pool's threads only send (`Pipeline.serve`). New events are dispatched while there
    are some, and looked for twice a second otherwise.

    One drain per process at a time (a second one returns at once): the thread pool and the per-endpoint
    counts are the process's."""
    if not _drain_lock.acquire(blocking=False):
        return DrainReport()
    try:
        return _drain(budget_s=budget_s, clock=clock, transport=transport)
    finally:
        _drain_lock.release()


def _drain(*, budget_s: float, clock: Callable[[], datetime], transport: Transport | None) -> DrainReport:
    executor, shared_transport = _shared()
    transport = transport or shared_transport
    pipeline = Pipeline(
        cap=settings.GATEWAY_WEBHOOK_PER_ENDPOINT,
        send=partial(_send, transport=transport),
        clock=clock,
        attempt_s=transport.timeout_s,
        rates=_endpoint_rates,
    )
    senders = [executor.submit(pipeline.serve) for _ in range(settings.GATEWAY_WEBHOOK_CONCURRENCY)]
    try:
        return _drain_loop(pipeline, budget_s=budget_s, clock=clock)
    finally:
        queued = pipeline.close()
        wait(senders)
        results, expired = pipeline.take_done()
        if results or queued or expired:  # the loop failed (the database, most likely): a last try
            try:
                results_record(results, now=clock())
                claims_release(queued + expired)
            except Exception:
                log.exception(
                    "webhook drain: %d results and %d claims left to their leases",
                    len(results),
                    len(queued + expired),
                )


def _drain_loop(pipeline: Pipeline, *, budget_s: float, clock: Callable[[], datetime]) -> DrainReport:
    report = DrainReport()
    deadline = time.monotonic() + budget_s
    endpoints = EndpointCache(ttl_s=1.0)
    health = HealthWrites()
    next_dispatch = next_poll = next_stopped_check = 0.0
    while True:
        pipeline.wake.clear()
        started = time.monotonic()
        claiming = started < deadline
        if claiming and started >= next_dispatch:
            dispatched = _retrying(lambda: events_dispatch(now=clock(), wait_for_lock=False))
            report.dispatched += dispatched
            next_dispatch = 0.0 if dispatched else started + DISPATCH_IDLE_S
        results, release = pipeline.take_done()
        if results:
            recorded = _retrying(partial(results_record, results, now=clock(), health=health))
            report.attempts += len(results)
            report.delivered += sum(result.ok for _, result in results)
            release += pipeline.drop(recorded.disabled)
        if not claiming:
            release += pipeline.drop()
        elif started >= next_stopped_check:
            next_stopped_check = started + STOPPED_CHECK_S
            release += pipeline.drop(_retrying(partial(endpoints_stopped, pipeline.endpoints_queued())))
        if release:
            _retrying(partial(claims_release, release))
        found: bool | None = None
        if claiming:
            wants = pipeline.wants()
            if any(n > 0 for n in wants.values()) or started >= next_poll:
                next_poll = started + POLL_S
                claims = _retrying(
                    partial(
                        claims_take,
                        now=clock(),
                        limit=MAX_QUEUED - pipeline.held(),
                        wants=wants,
                        endpoints=endpoints,
                    )
                )
                pipeline.add(claims)
                found = bool(claims)
        if pipeline.idle() and (not claiming or found is False):
            return report
        pipeline.wake.wait(FLUSH_S)


def _retrying(work: Callable[[], Any], tries: int = 3) -> Any:
    """Run a statement again after a deadlock, serialization failure or lost connection (the drain
    keeps its results: dying here would send them all again after their leases). Each statement is
    safe to run twice: records and releases check the attempt number, claims are new leases."""
    for attempt in range(tries):
        try:
            return work()
        except OperationalError as exc:
            if attempt == tries - 1:
                raise
            log.warning("webhook drain: retrying after %s", exc)
            if connection.connection is not None and connection.connection.closed:
                connection.close()  # the next statement connects again
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")

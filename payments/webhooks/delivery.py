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
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
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
            if claims.spent:  # those it took failed in the claim (out of attempts): others may be due
                continue
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
    drain = _Drain(pipeline, budget_s=budget_s, clock=clock)
    try:
        return drain.run()
    finally:
        drain.unwritten.release += pipeline.close()
        wait(senders)
        drain.unwritten.take(pipeline)
        if drain.unwritten:  # the loop failed: one last try
            try:
                drain.write()
            except Exception:
                log.exception(
                    "webhook drain: %d results and %d claims left to their leases",
                    len(drain.unwritten.results),
                    len(drain.unwritten.release),
                )


DB_ERRORS = (OperationalError, InterfaceError)
BACKOFF_MAX_S = 2.0  # a drain waiting for the database tries again at least this often
RETRIES_HOLDING_NOTHING = 3  # failed turns in a row before a drain that holds nothing gives up


@dataclass
class _Unwritten:
    """Results taken from the senders and claims to give back, kept until they are written: a database
    outage holds them here (results dropped would be sent again after their leases, and logged lost)."""

    results: list[tuple[Claim, Result]] = field(default_factory=list)
    release: list[Claim] = field(default_factory=list)

    def take(self, pipeline: Pipeline) -> None:
        results, release = pipeline.take_done()
        self.results += results
        self.release += release

    def __bool__(self) -> bool:
        return bool(self.results or self.release)

    def last_lease_end(self) -> datetime | None:
        ends = [c.lease_end for c in [*(c for c, _ in self.results), *self.release] if c.lease_end]
        return max(ends, default=None)


class _Drain:
    """The drain's database thread: dispatch, records, releases, claims ahead, one turn at a time. A
    turn the database fails loses nothing: what was taken from the senders stays in `unwritten`, and
    the next turn (after a backoff) writes it; the drain gives up a lease after the first failure (a
    result written later than its lease is still right: records check that the attempt is theirs). While
    the turns fail, the senders give queued claims back unsent after ENDPOINTS_FRESH_S (the endpoints
    are not read meanwhile)."""

    def __init__(self, pipeline: Pipeline, *, budget_s: float, clock: Callable[[], datetime]):
        self.pipeline = pipeline
        self.clock = clock
        self.deadline = time.monotonic() + budget_s
        self.report = DrainReport()
        self.unwritten = _Unwritten()
        self.endpoints = EndpointCache(ttl_s=1.0)
        self.health = HealthWrites()
        self.next_dispatch = self.next_poll = self.next_check = 0.0
        self.pause = 0.0
        self.give_up_at: float | None = None
        self.failures = 0  # turns failed in a row

    def run(self) -> DrainReport:
        while True:
            self.pipeline.wake.clear()
            started = time.monotonic()
            claiming = started < self.deadline
            self.unwritten.take(self.pipeline)
            if not claiming:
                self.unwritten.release += self.pipeline.drop()
            try:
                found = self.turn(started, claiming)
            except DB_ERRORS as exc:
                self.wait_for_database(exc)
                continue
            self.pause, self.give_up_at, self.failures = 0.0, None, 0
            if self.pipeline.idle() and not self.unwritten and (not claiming or found is False):
                return self.report
            self.pipeline.wake.wait(FLUSH_S)

    def turn(self, started: float, claiming: bool) -> bool | None:
        """One round of database work; returns whether a claim found anything (None: none made)."""
        if claiming and started >= self.next_dispatch:
            dispatched = events_dispatch(now=self.clock(), wait_for_lock=False)
            self.report.dispatched += dispatched
            self.next_dispatch = 0.0 if dispatched else started + DISPATCH_IDLE_S
        if claiming and started >= self.next_check:  # endpoints changed or stopped since the claims
            self.next_check = started + STOPPED_CHECK_S
            queued = self.pipeline.endpoints_queued()
            found = self.endpoints.get(queued, self.clock())
            self.pipeline.endpoints_set({e: v for e, v in found.items() if v[0]})
            self.unwritten.release += self.pipeline.drop(endpoints_stopped(queued))
        self.write()
        if not claiming:
            return None
        wants = self.pipeline.wants()
        if not (any(n > 0 for n in wants.values()) or started >= self.next_poll):
            return None
        self.next_poll = started + POLL_S
        claims = claims_take(
            now=self.clock(), limit=MAX_QUEUED - self.pipeline.held(), wants=wants, endpoints=self.endpoints
        )
        self.pipeline.add(claims)
        return bool(claims) or claims.spent > 0

    def write(self) -> None:
        """Record the results and release the claims kept; each is dropped from `unwritten` once its
        statement has committed (each is safe to run again: both check the attempt is still theirs)."""
        unwritten = self.unwritten
        if unwritten.results:
            recorded = results_record(unwritten.results, now=self.clock(), health=self.health)
            self.report.attempts += len(unwritten.results)
            self.report.delivered += sum(result.ok for _, result in unwritten.results)
            unwritten.results = []
            unwritten.release += self.pipeline.drop(recorded.disabled)
        if unwritten.release:
            claims_release(unwritten.release)
            unwritten.release = []

    def wait_for_database(self, exc: Exception) -> None:
        """After a failed turn: wait (backing off) and let the loop try again, or raise when nothing
        held can still be saved."""
        connection.close()  # the next statement connects again
        if self.give_up_at is None:
            lease_end = self.unwritten.last_lease_end()
            held_s = (lease_end - self.clock()).total_seconds() if lease_end else 0.0
            self.give_up_at = time.monotonic() + max(held_s, lease().total_seconds())
        self.failures += 1
        # Holding nothing, a few tries (a kept connection that died meanwhile: the next one connects
        # again); holding results or claims, for as long as a lease from the first failure.
        nothing_held = not self.unwritten and self.pipeline.idle()
        if (nothing_held and self.failures >= RETRIES_HOLDING_NOTHING) or time.monotonic() >= self.give_up_at:
            raise exc
        self.pause = min(max(2 * self.pause, 0.05), BACKOFF_MAX_S)
        log.warning(
            "webhook drain: the database failed (%s); %d results and %d releases kept, trying again in %.2f s",
            exc,
            len(self.unwritten.results),
            len(self.unwritten.release),
            self.pause,
        )
        time.sleep(self.pause)

"""Recording attempts: one attempt row per result, and each delivery moved on, in one statement per
batch (`results_record`); then the endpoints' health.

A delivery is delivered, failed (410, or no attempts left) or due again per the retry schedule. A result
whose lease was taken over by another worker changes nothing, and its attempt row is not written. An
endpoint that answers 410 or has failed for longer than `GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS` is
disabled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from gateway.metrics import WEBHOOK_ATTEMPT_SECONDS, WEBHOOK_ATTEMPTS, WEBHOOK_LOST_ANSWERED
from payments.models import WebhookAttempt, WebhookEndpoint

from .claims import Claim, retry_schedule
from .endpoints import Reason, State, endpoint_disable
from .transport import Result

HEALTHY_WRITE_S = 1.0  # a healthy endpoint's row is written at most this often per process


@dataclass
class HealthWrites:
    """What this process last wrote to endpoints' health, so that a busy healthy endpoint's row is
    written about once a second, not at every batch (the row is shared by every worker)."""

    ok_written: dict[str, float] = field(default_factory=dict)  # endpoint -> monotonic time

    def ok_due(self, endpoint_ids: list[str]) -> list[str]:
        fresh_after = time.monotonic() - HEALTHY_WRITE_S
        return [e for e in endpoint_ids if self.ok_written.get(e, 0.0) <= fresh_after]

    def wrote_ok(self, endpoint_ids: list[str]) -> None:
        written = time.monotonic()
        for endpoint_id in endpoint_ids:
            self.ok_written[endpoint_id] = written

    def saw_failure(self, endpoint_ids: list[str]) -> None:
        for endpoint_id in endpoint_ids:  # the next success writes at once (it clears failing_since)
            self.ok_written.pop(endpoint_id, None)


@dataclass
class Recorded:
    applied: set[int]  # deliveries whose result was applied
    disabled: set[str]  # endpoints disabled by these results (410, or failing for too long)


def results_record(
    results: list[tuple[Claim, Result]], *, now: datetime, health: HealthWrites | None = None
) -> Recorded:
    """Write the attempts and move each delivery on (one statement), then the endpoints' health.
    Without a transaction around it, each write commits on its own: no lock is held from one to the
    next, so no lock order with `endpoint_disable` to keep."""
    if not results:
        return Recorded(set(), set())
    schedule = retry_schedule()
    columns: tuple[list, ...] = tuple([] for _ in range(11))
    outcome_health: dict[str, str] = {}  # endpoint -> "ok" | "failing" | "gone"
    for claim, result in results:
        if result.ok:
            state, due, delivered = State.DELIVERED, None, now
            outcome_health[claim.endpoint_id] = "ok"
        else:
            gone = result.status == 410
            delivered = None
            if gone or claim.attempt >= len(schedule):
                state, due = State.FAILED, None
            else:
                state, due = State.PENDING, now + schedule[claim.attempt]
            if gone:
                outcome_health[claim.endpoint_id] = "gone"
            else:
                outcome_health.setdefault(claim.endpoint_id, "failing")
        row = (
            claim.delivery_id,
            claim.attempt,
            str(state),
            due,
            result.status,
            delivered,
            claim.started_at or claim.claimed_at,
            result.latency_ms,
            WebhookAttempt.Outcome.SUCCEEDED if result.ok else WebhookAttempt.Outcome.FAILED,
            _text(result.error),
            _text(result.excerpt),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    disabled = _endpoints_health(outcome_health, now=now, health=health)
    applied, lost_answered = _deliveries_update(columns)
    counted = [(o, ms) for i, o, ms in zip(columns[0], columns[8], columns[7], strict=True) if i in applied]
    transaction.on_commit(partial(_attempts_count, counted, lost_answered))
    return Recorded(applied, disabled)


def _text(value: str) -> str:
    """What an endpoint answered, as PostgreSQL text takes it: a NUL byte (which text refuses: one
    endpoint's answer would fail the whole batch's record) and lone surrogates replaced."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _deliveries_update(columns: tuple[list, ...]) -> tuple[set[int], int]:
    """Apply results whose lease is still ours (same attempt number, still pending) and write their
    attempt rows, in one statement (a lost attempt before one was logged by its claim). Returns the ids
    of the deliveries updated, and how many of their attempt rows replaced one logged lost."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH v AS (
                SELECT * FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::timestamptz[], %s::int[],
                                     %s::timestamptz[], %s::timestamptz[], %s::int[], %s::text[], %s::text[],
                                     %s::text[])
                    AS v(id, attempt, state, due, code, delivered, started, latency, outcome, error,
                         excerpt)
            ), applied AS (
                UPDATE payments_webhookdelivery d
                SET state = CASE WHEN v.state = 'pending' AND NOT e.enabled THEN 'paused' ELSE v.state END,
                    next_attempt_at = CASE WHEN e.enabled THEN v.due END,
                    claimed_at = NULL, last_status_code = v.code, delivered_at = v.delivered
                FROM v, payments_webhookendpoint e
                WHERE d.id = v.id AND d.attempts = v.attempt AND d.state = 'pending'
                  AND d.claimed_at IS NOT NULL AND e.id = d.endpoint_id
                RETURNING d.id
            ), attempts AS (
                INSERT INTO payments_webhookattempt
                    (delivery_id, number, started_at, latency_ms, status_code, outcome, error,
                     response_excerpt)
                SELECT v.id, v.attempt, v.started, v.latency, v.code, v.outcome, v.error, v.excerpt
                FROM v JOIN applied USING (id)
                -- a claim that took over after this lease ended logged this attempt lost, and was given
                -- back unsent: the result that did arrive replaces that row
                ON CONFLICT (delivery_id, number) DO UPDATE
                SET started_at = EXCLUDED.started_at, latency_ms = EXCLUDED.latency_ms,
                    status_code = EXCLUDED.status_code, outcome = EXCLUDED.outcome, error = EXCLUDED.error,
                    response_excerpt = EXCLUDED.response_excerpt
                WHERE payments_webhookattempt.outcome = 'lost'
                RETURNING xmax <> 0 AS replaced  -- 0 for a row inserted; the row lock the update took, else
            )
            SELECT id, (SELECT count(*) FROM attempts WHERE replaced) FROM applied
            """,
            list(columns),
        )
        rows = cursor.fetchall()
        return {row[0] for row in rows}, rows[0][1] if rows else 0


def _attempts_count(counted: list[tuple[str, int | None]], lost_answered: int = 0) -> None:
    if lost_answered:
        WEBHOOK_LOST_ANSWERED.inc(lost_answered)
    outcomes: dict[str, int] = {}
    for outcome, latency_ms in counted:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if latency_ms is not None and outcome != WebhookAttempt.Outcome.LOST:
            WEBHOOK_ATTEMPT_SECONDS.observe(latency_ms / 1000)
    for outcome, n in outcomes.items():
        WEBHOOK_ATTEMPTS.labels(outcome).inc(n)


def _endpoints_health(
    outcome_health: dict[str, str], *, now: datetime, health: HealthWrites | None
) -> set[str]:
    """Healthy endpoints: failing_since cleared, last success at most once a second per endpoint;
    failing ones: failing since now (unless already), disabled after GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS;
    gone ones (410): disabled. Returns the endpoints disabled."""
    health = health or HealthWrites()
    ok = [e for e, h in outcome_health.items() if h == "ok"]
    failing = [e for e, h in outcome_health.items() if h == "failing"]
    gone = [e for e, h in outcome_health.items() if h == "gone"]
    health.saw_failure(failing + gone)
    ok = health.ok_due(ok)
    disabled: set[str] = set()
    if ok:  # at most one write per endpoint a second while it is healthy (busy endpoints, many workers)
        WebhookEndpoint.objects.filter(pk__in=ok).filter(
            Q(failing_since__isnull=False)
            | Q(last_success_at__isnull=True)
            | Q(last_success_at__lt=now - timedelta(seconds=1))
        ).update(failing_since=None, last_success_at=now)
        health.wrote_ok(ok)
    if failing:
        WebhookEndpoint.objects.filter(pk__in=failing, failing_since__isnull=True).update(failing_since=now)
        cutoff = now - timedelta(hours=settings.GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS)
        for endpoint in WebhookEndpoint.objects.filter(
            pk__in=failing, enabled=True, failing_since__lte=cutoff
        ):
            endpoint_disable(endpoint=endpoint, reason=Reason.FAILING, now=now)
            disabled.add(endpoint.pk)
    for endpoint in WebhookEndpoint.objects.filter(pk__in=gone, enabled=True):
        endpoint_disable(endpoint=endpoint, reason=Reason.GONE, now=now)
        disabled.add(endpoint.pk)
    return disabled

"""Support cases, opened once per exception. They are learnt the way a merchant learns them: by reading
payments' event stream in its dispatch order (`Event.position`) from a cursor, never by a hook inside
payments' transactions; and, for what no event announces, by sweeping (an underpayment whose window has
closed, a webhook endpoint the gateway disabled). Each case has a unique key, so reading an event again
(a replay, a cursor moved back) never opens a second case."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Exists, OuterRef

from payments.admin_access import staff_merchants
from payments.errors import Conflict, InvalidRequest
from payments.models import Event, PaymentIntent, PaymentState, WebhookEndpoint
from payments.selectors import effective_deadline_sql

from .audit import audit_record
from .models import CaseNote, EventCursor, SupportCase
from .roles import roles_of

Kind = SupportCase.Kind
CURSOR = "cases"
# Events that are an exception by themselves, one case per exceptional transaction.
EXCEPTION_EVENTS = {
    "payment.late_payment_detected": Kind.LATE_PAYMENT,
    "payment.duplicate_payment_detected": Kind.DUPLICATE_PAYMENT,
    "payment.wrong_asset_detected": Kind.WRONG_ASSET,
    "payment.wrong_network_detected": Kind.WRONG_NETWORK,
}
ENDPOINT_DISABLED_BY_GATEWAY = (
    WebhookEndpoint.DisabledReason.FAILING,
    WebhookEndpoint.DisabledReason.GONE,
)


NOTE_MAX_CHARACTERS = 4000  # notes are read by people: on the case page, the payment page, the audit log


def note_text(value: str | None, *, param: str, missing: str) -> str:
    """A note, stripped: refused when empty or longer than people read."""
    text = (value or "").strip()
    if not text:
        raise InvalidRequest(missing, code="parameter_missing", param=param)
    if len(text) > NOTE_MAX_CHARACTERS:
        raise InvalidRequest(
            f"a note has at most {NOTE_MAX_CHARACTERS} characters", code="note_too_long", param=param
        )
    return text


def case_due(now: datetime) -> datetime:
    return now + timedelta(hours=settings.GATEWAY_CASE_DUE_HOURS)


def _exception_tx(dedupe_key: str) -> list[str]:
    """The transaction of an exception event, from its key `<kind>:<network>/<tx hash>/<index>`."""
    _, _, observation = dedupe_key.partition(":")
    parts = observation.split("/")
    return [parts[1]] if len(parts) == 3 else []


def _case_for(event: Event, now: datetime) -> SupportCase | None:
    kind = EXCEPTION_EVENTS.get(event.type)
    if kind is not None:
        key, hashes = f"{kind}:{event.intent_id}:{event.dedupe_key}", _exception_tx(event.dedupe_key)
    elif event.type == "settlement.unexpected_outflow":
        # One case per settlement, however many payments' funds it moved (each gets the event).
        settlement = event.payload.get("settlement") or {}
        kind, key = Kind.UNKNOWN_OUTFLOW, f"{Kind.UNKNOWN_OUTFLOW}:{settlement.get('id')}"
        hashes = [settlement["tx_hash"]] if settlement.get("tx_hash") else []
    elif event.type == "payment.verification_mismatch":
        # One case per finding (each finding is its own event, with its own key).
        findings = (event.payload.get("verification") or {}).get("findings") or []
        kind, key = Kind.CHAIN_MISMATCH, f"{Kind.CHAIN_MISMATCH}:{event.intent_id}:{event.dedupe_key}"
        hashes = sorted({f["tx_hash"] for f in findings if f.get("tx_hash")})
    elif event.type == "payment.close_difference":
        # One case per close (merchant, asset, network, day), however many addresses differ.
        close = event.payload.get("close") or {}
        kind, key = Kind.CLOSE_DIFFERENCE, f"{Kind.CLOSE_DIFFERENCE}:{close.get('id')}"
        hashes = []
    elif event.type == "payment.overpaid":
        kind, key = Kind.OVERPAID, f"{Kind.OVERPAID}:{event.intent_id}"
        hashes = sorted({t["tx_hash"] for t in event.payload.get("transactions", []) if t.get("canonical")})
    else:
        return None
    return SupportCase(
        kind=kind,
        merchant_id=event.merchant_id,
        intent_id=event.intent_id,
        transaction_hashes=hashes,
        source_event_id=event.pk,
        dedupe_key=key,
        opened_at=now,
        due_by=case_due(now),
    )


def cases_open_from_events(*, now: datetime, batch: int = 1000) -> int:
    """Read the next dispatched events after the cursor and open their cases; returns the events read.
    Reading, opening and moving the cursor commit together (the cursor row is locked meanwhile)."""
    with transaction.atomic():
        # Two workers starting at once both insert it: one row wins, the other's insert does nothing.
        EventCursor.objects.bulk_create([EventCursor(name=CURSOR)], ignore_conflicts=True)
        cursor = EventCursor.objects.select_for_update().get(name=CURSOR)
        events = list(
            Event.objects.filter(position__gt=cursor.position)
            .order_by("position")
            .only("id", "merchant_id", "intent_id", "type", "dedupe_key", "payload", "position")[:batch]
        )
        cases = [case for case in (_case_for(event, now) for event in events) if case is not None]
        SupportCase.objects.bulk_create(cases, ignore_conflicts=True)
        if events:
            cursor.position = events[-1].position
            cursor.save(update_fields=["position"])
    return len(events)


def cases_sweep(*, now: datetime) -> None:
    """Open the cases no event announces: underpaid intents whose window has closed, and endpoints the
    gateway disabled (each disabling its own case)."""
    underpaid = (
        PaymentIntent.objects.filter(state=PaymentState.UNDERPAID)
        .alias(deadline=effective_deadline_sql())
        .filter(deadline__lte=now)
        .exclude(Exists(SupportCase.objects.filter(intent=OuterRef("pk"), kind=Kind.UNDERPAID_EXPIRED)))
        .values_list("pk", "merchant_id")
    )
    disabled = WebhookEndpoint.objects.filter(
        disabled_reason__in=ENDPOINT_DISABLED_BY_GATEWAY, disabled_at__isnull=False, deleted_at__isnull=True
    ).values_list("pk", "merchant_id", "disabled_at")
    cases = [
        SupportCase(
            kind=Kind.UNDERPAID_EXPIRED,
            merchant_id=merchant_id,
            intent_id=intent_id,
            dedupe_key=f"{Kind.UNDERPAID_EXPIRED}:{intent_id}",
            opened_at=now,
            due_by=case_due(now),
        )
        for intent_id, merchant_id in underpaid
    ] + [
        SupportCase(
            kind=Kind.WEBHOOK_ENDPOINT_DISABLED,
            merchant_id=merchant_id,
            endpoint_id=endpoint_id,
            dedupe_key=f"{Kind.WEBHOOK_ENDPOINT_DISABLED}:{endpoint_id}:{disabled_at.isoformat()}",
            opened_at=now,
            due_by=case_due(now),
        )
        for endpoint_id, merchant_id, disabled_at in disabled
    ]
    SupportCase.objects.bulk_create(cases, ignore_conflicts=True)


def cases_open(*, now: datetime) -> int:
    """One round (the beat runs it every GATEWAY_CASES_POLL_S): the event stream to its end, then the sweep."""
    read = total = cases_open_from_events(now=now)
    while read:
        read = cases_open_from_events(now=now)
        total += read
    cases_sweep(now=now)
    return total


# --- safe actions on cases (support agents) ----------------------------------------------------------


def _require(actor: User, case: SupportCase) -> None:
    """Acting on a case needs the change permission on cases, for the case's merchant."""
    if not actor.is_active or not actor.has_perm("support.change_supportcase"):
        raise PermissionDenied("you may not act on support cases")
    if not staff_merchants(actor).filter(pk=case.merchant_id).exists():
        raise PermissionDenied("you may not act on this merchant's cases")


def _audit(actor: User, action: str, case: SupportCase, before, after, reason: str, now: datetime, **context):
    audit_record(
        actor=actor.get_username(),
        role=roles_of(actor),
        action=action,
        now=now,
        merchant_id=case.merchant_id,
        object_type="support_case",
        object_id=str(case.pk),
        before=before,
        after=after,
        reason=reason,
        **context,
    )


def case_note_add(*, actor: User, case: SupportCase, body: str, now: datetime, **context) -> CaseNote:
    """Add a note to the case's thread (audited)."""
    _require(actor, case)
    body = note_text(body, param="body", missing="a note needs some text")
    with transaction.atomic():
        note = CaseNote.objects.create(case=case, author=actor.get_username(), body=body, created_at=now)
        _audit(actor, "case.note", case, None, {"note": note.pk}, body, now, **context)
    return note


def case_assign(
    *, actor: User, case: SupportCase, assignee: User | None, now: datetime, note: str = "", **context
) -> SupportCase:
    """Give the case to a staff user (or to nobody); an open case is then in progress."""
    _require(actor, case)
    if note.strip():
        note = note_text(note, param="note", missing="")
    if assignee is not None and not (assignee.is_active and assignee.is_staff):
        raise InvalidRequest(
            "cases are assigned to active staff users", code="invalid_assignee", param="assignee"
        )
    with transaction.atomic():
        case = SupportCase.objects.select_for_update().get(pk=case.pk)
        before = {"assignee": case.assignee.get_username() if case.assignee else None, "status": case.status}
        case.assignee = assignee
        if assignee is not None and case.status == SupportCase.Status.OPEN:
            case.status = SupportCase.Status.IN_PROGRESS
        case.save(update_fields=["assignee", "status"])
        after = {"assignee": assignee.get_username() if assignee else None, "status": case.status}
        _audit(actor, "case.assign", case, before, after, note, now, **context)
    return case


def case_status_set(
    *, actor: User, case: SupportCase, status: str, now: datetime, note: str = "", **context
) -> SupportCase:
    """Move the case to another status; resolving it needs a note saying how."""
    _require(actor, case)
    if note.strip():
        note = note_text(note, param="note", missing="")
    if status not in SupportCase.Status.values:
        raise InvalidRequest(
            f"status is one of {', '.join(SupportCase.Status.values)}", code="invalid_status"
        )
    if status == SupportCase.Status.RESOLVED and not note.strip():
        raise InvalidRequest("say how the case was resolved", code="reason_required", param="note")
    with transaction.atomic():
        case = SupportCase.objects.select_for_update().get(pk=case.pk)
        before = {"status": case.status}
        case.status = status
        case.resolved_at = now if status == SupportCase.Status.RESOLVED else None
        case.save(update_fields=["status", "resolved_at"])
        if note.strip():
            CaseNote.objects.create(case=case, author=actor.get_username(), body=note.strip(), created_at=now)
        _audit(actor, "case.status", case, before, {"status": status}, note.strip(), now, **context)
    return case


def case_escalate(*, actor: User, case: SupportCase, note: str, now: datetime, **context) -> SupportCase:
    """Hand the case to a support lead (it shows in the leads' "escalated" list), saying why; an open case
    is then in progress. A resolved case is reopened first, not escalated."""
    _require(actor, case)
    note = note_text(note, param="note", missing="say what the lead should decide")
    with transaction.atomic():
        case = SupportCase.objects.select_for_update().get(pk=case.pk)
        if case.status == SupportCase.Status.RESOLVED:
            raise Conflict("the case is resolved: reopen it first", code="case_resolved")
        if case.escalated_at is not None:
            raise Conflict("the case is escalated already", code="case_already_escalated")
        before = {"escalated_at": None, "status": case.status}
        case.escalated_at, case.escalated_by = now, actor
        if case.status == SupportCase.Status.OPEN:
            case.status = SupportCase.Status.IN_PROGRESS
        case.save(update_fields=["escalated_at", "escalated_by", "status"])
        CaseNote.objects.create(case=case, author=actor.get_username(), body=note, created_at=now)
        after = {"escalated_at": now.isoformat(), "status": case.status}
        _audit(actor, "case.escalate", case, before, after, note, now, **context)
    return case


def cases_open_for_intent(*, intent_id: str, kind: str, now: datetime) -> None:
    """Open the intent's cases of `kind` from its exception events now, under the keys the stream reader
    uses (so it never opens them a second time), whether or not the events were dispatched yet."""
    events = Event.objects.filter(
        intent_id=intent_id, type__in=[t for t, k in EXCEPTION_EVENTS.items() if k == kind]
    )
    SupportCase.objects.bulk_create(
        [case for case in (_case_for(event, now) for event in events) if case is not None],
        ignore_conflicts=True,
    )

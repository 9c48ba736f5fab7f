"""Dangerous actions and four-eyes. A dangerous action (a decision on a payment, a change to a merchant's
policy) is submitted by someone who holds its permission on the merchant, with a reason. Where the
merchant's policy asks for a second person, it becomes an `ApprovalRequest` (maker, payload and its hash,
expiry) that another person holding the same permission approves or rejects; otherwise it is applied at
once. Applying, deciding and the audit entries happen in one transaction. The maker can never approve
their own request: checked here, and refused by the database."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from payments.admin_access import may_act_for_merchant, staff_merchants
from payments.errors import Conflict, GatewayError, InvalidRequest, NotFound
from payments.models import Merchant, PaymentIntent
from payments.services import reason_check

from .audit import audit_record
from .cases import NOTE_MAX_CHARACTERS
from .models import ApprovalRequest, MerchantPolicy
from .roles import roles_of


@dataclass(frozen=True)
class DangerousAction:
    """`check(merchant, intent, payload, now)` raises a GatewayError when the action cannot apply as asked
    (run when submitted, so a request that could never apply is not sent for approval; and again, under
    the locks, when applied). `apply(actor, role, merchant, intent, payload, reason, now)` does it and
    returns what it made (for the request's result and the audit entry). `configuration`: a change to
    how the merchant is run (four-eyes per the policy's `config_four_eyes`), not a decision on a payment."""

    name: str
    label: str
    permission: str
    check: Callable[..., None]
    apply: Callable[..., dict]
    configuration: bool = False
    # What the action puts at stake, in the payment's price currency, when that is not the payment's
    # price (a refund of an overpayment moves more than the order cost): `(intent, payload) -> Decimal`.
    amount_at_stake: Callable[[PaymentIntent, dict], Any] | None = None


DANGEROUS_ACTIONS: dict[str, DangerousAction] = {}


def dangerous_action(action: DangerousAction) -> DangerousAction:
    if action.name in DANGEROUS_ACTIONS:
        raise ValueError(f"dangerous action {action.name!r} registered twice")
    DANGEROUS_ACTIONS[action.name] = action
    return action


@dataclass(frozen=True)
class Submitted:
    """What became of a submission: applied at once (`result`), or waiting for approval (`approval`)."""

    applied: bool
    result: dict | None = None
    approval: ApprovalRequest | None = None


def may_take(user: User, action: DangerousAction, merchant_id: str) -> bool:
    return may_act_for_merchant(user, action.permission, merchant_id)


def payload_hash(action: str, merchant_id: str, intent_id: str | None, payload: dict) -> str:
    """SHA-256 of the canonical JSON of what is asked: approving approves exactly this."""
    canonical = json.dumps(
        {"action": action, "merchant": merchant_id, "intent": intent_id, "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def four_eyes_required(
    action: DangerousAction, merchant: Merchant, intent: PaymentIntent | None, payload: dict | None = None
) -> bool:
    """The merchant's policy; with none stored, always (safe by default). Above an amount: a payment priced
    in another currency than the threshold's needs four-eyes too (no conversion is guessed); the amount is
    the payment's price, or what the action puts at stake when it says (given its payload)."""
    policy = MerchantPolicy.objects.filter(merchant=merchant).first()
    if policy is None:
        return True
    if action.configuration:
        return policy.config_four_eyes
    if policy.four_eyes == MerchantPolicy.FourEyes.NEVER:
        return False
    if policy.four_eyes == MerchantPolicy.FourEyes.ABOVE_AMOUNT and intent is not None:
        at_stake = intent.price_amount
        if action.amount_at_stake is not None and payload is not None:
            at_stake = max(at_stake, action.amount_at_stake(intent, payload))
        return intent.price_currency != policy.threshold_currency or at_stake > policy.threshold_amount
    return True


def approval_ttl() -> timedelta:
    return timedelta(hours=settings.GATEWAY_APPROVAL_TTL_HOURS)


def dangerous_action_submit(
    *,
    actor: User,
    action: str,
    merchant: Merchant,
    payload: dict[str, Any],
    reason: str,
    now: datetime,
    intent: PaymentIntent | None = None,
    request_id: str = "",
    client_address: str = "",
) -> Submitted:
    """Take the action, or ask for its approval when the merchant's policy wants two people."""
    spec = _action(action)
    if not may_take(actor, spec, merchant.pk):
        raise PermissionDenied(f"you may not {spec.label} for this merchant")
    reason = reason_check(reason)
    spec.check(merchant=merchant, intent=intent, payload=payload, now=now)
    context = {"request_id": request_id, "client_address": client_address}
    role = roles_of(actor)
    if not four_eyes_required(spec, merchant, intent, payload):
        with transaction.atomic():
            result = spec.apply(
                actor=actor,
                role=role,
                merchant=merchant,
                intent=intent,
                payload=payload,
                reason=reason,
                now=now,
            )
            _audit_applied(
                spec, actor.get_username(), role, merchant, intent, payload, result, reason, now, context
            )
        return Submitted(applied=True, result=result)
    intent_id = intent.pk if intent else None
    try:
        with transaction.atomic():
            approval = ApprovalRequest.objects.create(
                action=spec.name,
                merchant=merchant,
                intent=intent,
                payload=payload,
                payload_hash=payload_hash(spec.name, merchant.pk, intent_id, payload),
                reason=reason,
                maker=actor,
                maker_role=role,
                created_at=now,
                expires_at=now + approval_ttl(),
            )
            _audit_approval(
                approval, "approval.requested", actor.get_username(), role, None, reason, now, context
            )
    except IntegrityError as exc:
        raise Conflict(
            "the same action is already waiting for approval", code="approval_already_pending"
        ) from exc
    return Submitted(applied=False, approval=approval)


def approval_decide(
    *,
    actor: User,
    approval_id: int,
    approve: bool,
    now: datetime,
    note: str = "",
    request_id: str = "",
    client_address: str = "",
) -> ApprovalRequest:
    """Approve (apply the action as asked, as its maker's decision) or reject a pending request. A request
    past its expiry is expired instead. If the action no longer applies (the payment changed meanwhile),
    the request is kept as failed, with the reason, and nothing else changes."""
    context = {"request_id": request_id, "client_address": client_address}
    with transaction.atomic():
        approval = (
            ApprovalRequest.objects.select_for_update()
            .select_related("merchant", "maker")
            .filter(pk=approval_id)
            .first()
        )
        if approval is None or not staff_merchants(actor).filter(pk=approval.merchant_id).exists():
            raise NotFound("no such approval request", code="approval_not_found")
        spec = _action(approval.action)
        if approval.maker_id == actor.pk:
            raise PermissionDenied("a request is approved or rejected by someone other than who asked")
        if not may_take(actor, spec, approval.merchant_id):
            raise PermissionDenied(f"you may not {spec.label} for this merchant")
        if approval.status != ApprovalRequest.Status.PENDING:
            raise Conflict(f"the request is {approval.get_status_display()} already", code="approval_decided")
        if now >= approval.expires_at:
            _expire(approval, now)  # kept as expired: the refusal below is raised after this commits
            expired = True
        else:
            expired = False
            approval = _decide_pending(approval, actor, spec, approve, note, now, context)
    if expired:
        raise Conflict("the request expired before it was decided", code="approval_expired")
    return approval


def _decide_pending(
    approval: ApprovalRequest,
    actor: User,
    spec: DangerousAction,
    approve: bool,
    note: str,
    now: datetime,
    context: dict,
) -> ApprovalRequest:
    """Approve (applying the action as its maker asked) or reject; under the caller's lock on the request."""
    intent_id = approval.intent_id
    if approval.payload_hash != payload_hash(
        approval.action, approval.merchant_id, intent_id, approval.payload
    ):
        raise Conflict("the request's payload does not match its hash", code="approval_tampered")
    role = roles_of(actor)
    approval.checker, approval.checker_role, approval.decided_at = actor, role, now
    if len(note.strip()) > NOTE_MAX_CHARACTERS:
        raise InvalidRequest(f"a note has at most {NOTE_MAX_CHARACTERS} characters", code="note_too_long")
    approval.decision_note = note.strip()
    if not approve:
        if not approval.decision_note:
            raise InvalidRequest("say why the request is rejected", code="reason_required", param="note")
        approval.status = ApprovalRequest.Status.REJECTED
    else:
        intent = PaymentIntent.objects.filter(pk=intent_id).first() if intent_id else None
        try:
            with transaction.atomic():
                if not may_take(approval.maker, spec, approval.merchant_id):
                    # Applied as the maker's decision: they must still be allowed to take it.
                    raise Conflict(
                        f"{approval.maker.get_username()} may no longer {spec.label} for this merchant",
                        code="maker_no_longer_permitted",
                    )
                spec.check(merchant=approval.merchant, intent=intent, payload=approval.payload, now=now)
                result = spec.apply(
                    actor=approval.maker,
                    role=approval.maker_role,
                    merchant=approval.merchant,
                    intent=intent,
                    payload=approval.payload,
                    reason=approval.reason,
                    now=now,
                )
                result = {**result, "approved_by": actor.get_username(), "approval": approval.pk}
                _audit_applied(
                    spec,
                    approval.maker.get_username(),
                    approval.maker_role,
                    approval.merchant,
                    intent,
                    approval.payload,
                    result,
                    approval.reason,
                    now,
                    context,
                )
        except GatewayError as exc:
            approval.status = ApprovalRequest.Status.FAILED
            approval.result = {"error": exc.code, "message": exc.message}
        else:
            approval.status = ApprovalRequest.Status.APPROVED
            approval.result = result
    approval.save()
    _audit_approval(
        approval,
        f"approval.{approval.status}",
        actor.get_username(),
        role,
        approval.result,
        note,
        now,
        context,
    )
    return approval


def approvals_expire(*, now: datetime) -> int:
    """Mark pending requests past their expiry expired (kept, audited). Returns how many."""
    expired = 0
    for pk in ApprovalRequest.objects.filter(
        status=ApprovalRequest.Status.PENDING, expires_at__lte=now
    ).values_list("pk", flat=True):
        with transaction.atomic():
            approval = ApprovalRequest.objects.select_for_update().get(pk=pk)
            if approval.status == ApprovalRequest.Status.PENDING:
                _expire(approval, now)
                expired += 1
    return expired


def _expire(approval: ApprovalRequest, now: datetime) -> None:
    approval.status, approval.decided_at = ApprovalRequest.Status.EXPIRED, now
    approval.save(update_fields=["status", "decided_at"])
    _audit_approval(approval, "approval.expired", "system:approvals", "", None, "", now, {})


def _action(name: str) -> DangerousAction:
    from . import dangerous  # noqa: F401 (registers the actions)

    spec = DANGEROUS_ACTIONS.get(name)
    if spec is None:
        raise InvalidRequest(f"no dangerous action {name!r}", code="invalid_action", param="action")
    return spec


def _audit_approval(approval, action, actor, role, after, reason, now, context) -> None:
    audit_record(
        actor=actor,
        role=role,
        action=action,
        now=now,
        merchant_id=approval.merchant_id,
        object_type="approval_request",
        object_id=str(approval.pk),
        before=None,
        after={
            "action": approval.action,
            "intent": approval.intent_id,
            "payload": approval.payload,
            "payload_hash": approval.payload_hash,
            "maker": approval.maker.get_username(),
            "status": approval.status,
            "result": after,
        },
        reason=reason,
        **context,
    )


def _audit_applied(spec, actor, role, merchant, intent, payload, result, reason, now, context) -> None:
    audit_record(
        actor=actor,
        role=role,
        action=spec.name,
        now=now,
        merchant_id=merchant.pk,
        object_type="payment_intent" if intent is not None else "merchant",
        object_id=intent.pk if intent is not None else merchant.pk,
        before=result.get("before"),
        after={k: v for k, v in result.items() if k != "before"} | {"payload": payload},
        reason=reason,
        **context,
    )

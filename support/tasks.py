"""Celery entry points of the support app."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from .approvals import approvals_expire as approvals_expire_round
from .audit import audit_checkpoint_sign
from .cases import cases_open as cases_open_round


@shared_task
def audit_checkpoint() -> int | None:
    """Sign the audit log's head (beat, every GATEWAY_AUDIT_CHECKPOINT_S); the sequence signed, if any."""
    checkpoint = audit_checkpoint_sign(now=timezone.now())
    return checkpoint.sequence if checkpoint else None


@shared_task
def cases_open() -> int:
    """Open the cases of new exceptions (beat, every GATEWAY_CASES_POLL_S); the events read."""
    return cases_open_round(now=timezone.now())


@shared_task
def approvals_expire() -> int:
    """Mark approval requests past their expiry expired (beat, every minute); how many."""
    return approvals_expire_round(now=timezone.now())

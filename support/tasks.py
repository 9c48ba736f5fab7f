"""Celery entry points of the support app."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from .audit import audit_checkpoint_sign


@shared_task
def audit_checkpoint() -> int | None:
    """Sign the audit log's head (beat, every GATEWAY_AUDIT_CHECKPOINT_S); the sequence signed, if any."""
    checkpoint = audit_checkpoint_sign(now=timezone.now())
    return checkpoint.sequence if checkpoint else None

"""The support app's records. The audit log is append-only (a trigger refuses UPDATE, DELETE and TRUNCATE)
and hash-chained; signed checkpoints of its head catch a truncated tail."""

from __future__ import annotations

from django.db import models


class AuditEntry(models.Model):
    """One action, approval or configuration change: who (actor and role), what (action, object, before and
    after), why (reason), from where (request id, client address). `entry_hash` is SHA-256 over the
    previous entry's hash and this entry's canonical form, so changing or removing any entry breaks every
    link after it. Written only by `support.audit.audit_record`, under a lock, so the chain never forks."""

    sequence = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="username, or system:<process> for automatic entries")
    role = models.CharField(max_length=40, blank=True)
    action = models.CharField(max_length=80)
    merchant_id = models.CharField(max_length=40, blank=True, db_index=True)
    object_type = models.CharField(max_length=80, blank=True)
    object_id = models.CharField(max_length=80, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    client_address = models.CharField(max_length=45, blank=True)
    previous_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor}"


class AuditCheckpoint(models.Model):
    """The chain's head at a time, signed with a key from the environment (never in the database): an entry
    removed from the tail leaves a checkpoint naming an entry that is gone or different."""

    sequence = models.PositiveBigIntegerField(help_text="the newest entry's sequence when signed")
    entry_hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField()
    key_id = models.CharField(max_length=16, help_text="which of GATEWAY_AUDIT_KEYS signed it")
    signature = models.CharField(max_length=64)

    class Meta:
        ordering = ["signed_at", "id"]

    def __str__(self) -> str:
        return f"checkpoint at #{self.sequence} ({self.signed_at:%Y-%m-%d %H:%M:%S})"

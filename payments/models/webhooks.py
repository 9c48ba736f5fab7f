"""Webhook endpoints, their secrets, and the delivery of events to them: one delivery per (event,
endpoint) plus one per replay, each with its attempts (the delivery log)."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

from ..encryption import secret_decrypt
from .evidence import Event
from .ids import endpoint_id
from .merchants import Merchant


class WebhookEndpoint(models.Model):
    """Where a merchant wants events sent. An empty `event_types` list means every type."""

    class DisabledReason(models.TextChoices):
        NONE = "", "enabled"
        MERCHANT = "merchant", "disabled by the merchant"
        OPERATOR = "operator", "disabled by an operator"
        GONE = "gone", "the endpoint answered 410 Gone"
        FAILING = "failing", "failing for too long"

    id = models.CharField(primary_key=True, max_length=40, default=endpoint_id, editable=False)
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = ArrayField(models.CharField(max_length=60), default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=16, choices=DisabledReason.choices, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="first failed attempt since the last success"
    )
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["merchant", "created_at"], name="endpoint_merchant_created")]

    def __str__(self) -> str:
        return f"{self.url} ({self.id})"


class WebhookSecret(models.Model):
    """A `whsec_` signing secret. The current one has no `expires_at`; after a rotation the previous one
    expires at the end of the overlap, and until then both sign every message. Stored encrypted
    (payments.encryption, keys from GATEWAY_SECRETS_KEYS): HMAC signing needs the key itself, so it must
    be reversible, but a database dump alone must not let anyone sign."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="secrets")
    secret_encrypted = models.TextField(help_text="Fernet token of the whsec_ secret")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"signing secret {self.pk} ({self.endpoint_id})"

    @property
    def secret(self) -> str:
        """The secret in the clear (for signing; never shown again after its creation)."""
        return secret_decrypt(self.secret_encrypted)


class WebhookDelivery(models.Model):
    """One event to one endpoint: retried on the schedule until delivered or out of attempts. `claimed_at`
    is set while a worker holds the attempt (its lease ends at `next_attempt_at`)."""

    class Kind(models.TextChoices):
        ORIGINAL = "original"
        REPLAY = "replay"

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "failed (no attempts left, or 410)"
        PAUSED = "paused", "paused (endpoint disabled)"

    # indexed by delivery_event and delivery_endpoint_created (no varchar_pattern_ops copies)
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="deliveries", db_index=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries", db_index=False
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.ORIGINAL)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.CharField(max_length=120, blank=True, help_text="who asked for a replay")
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["event", "endpoint"],
                condition=models.Q(kind="original"),
                name="delivery_original_unique",
            ),
        ]
        indexes = [
            models.Index(
                fields=["endpoint", "next_attempt_at", "id"],
                condition=models.Q(state="pending"),
                name="delivery_due",
            ),
            models.Index(fields=["endpoint", "created_at"], name="delivery_endpoint_created"),
            models.Index(fields=["event"], name="delivery_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id} ({self.state})"


class WebhookAttempt(models.Model):
    """One HTTP attempt: the delivery log. `lost` means the worker stopped mid-attempt (its result is
    unknown; the delivery was attempted again)."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        LOST = "lost"

    # indexed by attempt_delivery_number_unique, which starts with it
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.TextField(blank=True, help_text="at most 1 KB of the response body")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_delivery_number_unique")
        ]

    def __str__(self) -> str:
        return f"#{self.number} {self.outcome} {self.status_code or ''}"

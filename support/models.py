"""The support app's records. The audit log is append-only (a trigger refuses UPDATE, DELETE and TRUNCATE)
and hash-chained; signed checkpoints of its head catch a truncated tail."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class AuditEntry(models.Model):
    """One action, approval or configuration change: who (actor and role), what (action, object, before and
    after), why (reason), from where (request id, client address). `entry_hash` is SHA-256 over the
    previous entry's hash and this entry's canonical form, so changing or removing any entry breaks every
    link after it. Written only by `support.audit.audit_record`, under a lock, so the chain never forks."""

    sequence = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="username, or system:<process> for automatic entries")
    role = models.CharField(max_length=200, blank=True, help_text="the actor's roles, comma-separated")
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


class SupportCase(models.Model):
    """One exception to look into, opened once (unique `dedupe_key`) by reading payments' event stream and
    sweeping for what no event announces (an underpayment whose window closed, a disabled webhook
    endpoint). Carries its owner, status, due date, notes and the transactions it concerns."""

    class Kind(models.TextChoices):
        LATE_PAYMENT = "late_payment", "late payment"
        DUPLICATE_PAYMENT = "duplicate_payment", "duplicate payment"
        WRONG_ASSET = "wrong_asset", "wrong asset"
        WRONG_NETWORK = "wrong_network", "wrong network"
        UNDERPAID_EXPIRED = "underpaid_expired", "underpaid, window closed"
        OVERPAID = "overpaid", "overpaid"
        WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint_disabled", "webhook endpoint disabled"
        UNKNOWN_OUTFLOW = "unknown_outflow", "unknown outflow"
        CHAIN_MISMATCH = "chain_mismatch", "chain disagrees with the stored evidence"
        CLOSE_DIFFERENCE = "close_difference", "daily close differs from the chain"

    class Status(models.TextChoices):
        OPEN = "open", "open"
        IN_PROGRESS = "in_progress", "in progress"
        WAITING_ON_CUSTOMER = "waiting_on_customer", "waiting on customer"
        RESOLVED = "resolved", "resolved"

    kind = models.CharField(max_length=40, choices=Kind.choices)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.OPEN)
    merchant = models.ForeignKey("payments.Merchant", on_delete=models.PROTECT, related_name="support_cases")
    intent = models.ForeignKey(
        "payments.PaymentIntent",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="support_cases",
    )
    endpoint = models.ForeignKey(
        "payments.WebhookEndpoint",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="support_cases",
    )
    assignee = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="support_cases"
    )
    transaction_hashes = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    source_event_id = models.CharField(max_length=40, blank=True, help_text="the event that opened it")
    dedupe_key = models.CharField(max_length=200, unique=True, help_text="one case per exception")
    opened_at = models.DateTimeField()
    due_by = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True, help_text="when an agent handed it to a lead")
    escalated_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="escalated_cases"
    )

    class Meta:
        ordering = ["opened_at", "id"]
        indexes = [models.Index(fields=["status", "kind"], name="case_status_kind")]

    def __str__(self) -> str:
        return f"case {self.pk}: {self.get_kind_display()} ({self.get_status_display()})"


class CaseNote(models.Model):
    """A note on a case, in the order written (the thread)."""

    case = models.ForeignKey(SupportCase, on_delete=models.PROTECT, related_name="notes")
    author = models.CharField(max_length=150)
    body = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"note by {self.author}"


class EventCursor(models.Model):
    """How far a reader of payments' event stream has got (by the events' `position`), like a merchant
    paging `GET /events`: read, act idempotently, move on, in one transaction."""

    name = models.CharField(max_length=40, unique=True)
    position = models.BigIntegerField(default=0)


class MerchantPolicy(models.Model):
    """How a merchant wants dangerous decisions on its payments taken: by one support lead, or by two
    (four-eyes: one asks, another approves), always, never, or above a price. No row means the safe
    default: four-eyes always. Changing it is itself a dangerous action (four-eyes unless the policy
    says otherwise for configuration changes)."""

    class FourEyes(models.TextChoices):
        ALWAYS = "always", "always"
        ABOVE_AMOUNT = "above_amount", "above an amount"
        NEVER = "never", "never"

    merchant = models.OneToOneField(
        "payments.Merchant", on_delete=models.PROTECT, related_name="support_policy"
    )
    four_eyes = models.CharField(max_length=16, choices=FourEyes.choices, default=FourEyes.ALWAYS)
    threshold_amount = models.DecimalField(
        max_digits=40,
        decimal_places=18,
        null=True,
        blank=True,
        help_text="above_amount: the price above which",
    )
    threshold_currency = models.CharField(
        max_length=12,
        blank=True,
        help_text="above_amount: a payment priced in another currency needs four-eyes",
    )
    config_four_eyes = models.BooleanField(
        default=True, help_text="wallet key and policy changes need a second person's approval"
    )
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "merchant policies"
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(four_eyes="above_amount")
                | (models.Q(threshold_amount__gte=0) & ~models.Q(threshold_currency="")),
                name="policy_threshold_complete",
            )
        ]

    def __str__(self) -> str:
        return f"policy of {self.merchant_id}: four-eyes {self.get_four_eyes_display()}"


class ApprovalRequest(models.Model):
    """A dangerous action asked for by one person (the maker) and applied only when another approves (the
    checker): the action, its payload and the payload's hash (what is approved is exactly what was asked),
    the maker's reason, and an expiry. The database refuses a checker who is the maker, and one pending
    request per identical payload. Decided requests (approved, rejected, expired, failed) are kept."""

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for approval"
        APPROVED = "approved", "approved and applied"
        REJECTED = "rejected", "rejected"
        EXPIRED = "expired", "expired"
        FAILED = "failed", "approved, but could not be applied"

    action = models.CharField(max_length=60)
    merchant = models.ForeignKey(
        "payments.Merchant", on_delete=models.PROTECT, related_name="approval_requests"
    )
    intent = models.ForeignKey(
        "payments.PaymentIntent",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="approval_requests",
    )
    payload = models.JSONField()
    payload_hash = models.CharField(max_length=64)
    reason = models.TextField()
    maker = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="approvals_asked")
    maker_role = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    checker = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="approvals_decided"
    )
    checker_role = models.CharField(max_length=200, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True, help_text="what applying it made, or why it could not")

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("decide_payment", "Take dangerous decisions on payments (resolutions)")]
        indexes = [models.Index(fields=["status", "created_at"], name="approval_status_created")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(checker__isnull=True) | ~models.Q(checker=models.F("maker")),
                name="approval_checker_is_not_maker",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    status__in=["pending", "expired"], checker__isnull=True, decided_at__isnull=True
                )
                | (
                    models.Q(status__in=["approved", "rejected", "failed"])
                    & models.Q(checker__isnull=False, decided_at__isnull=False)
                )
                | models.Q(status="expired", decided_at__isnull=False, checker__isnull=True),
                name="approval_decision_complete",
            ),
            models.UniqueConstraint(
                fields=["action", "payload_hash"],
                condition=models.Q(status="pending"),
                name="approval_one_pending_per_payload",
            ),
        ]

    def __str__(self) -> str:
        return f"approval {self.pk}: {self.action} ({self.get_status_display()})"


class OverpaymentDecision(models.Model):
    """What to do with the excess of an overpaid payment: keep it, or refund it (the refund itself is
    made later, by the refunds flow, which reads this). One current decision per payment: a new decision
    supersedes the previous one (`superseded_at` set), which stays for the record."""

    class Decision(models.TextChoices):
        KEEP = "keep", "keep the excess"
        REFUND = "refund", "refund the excess"

    intent = models.ForeignKey(
        "payments.PaymentIntent", on_delete=models.PROTECT, related_name="overpayment_decisions"
    )
    merchant = models.ForeignKey(
        "payments.Merchant", on_delete=models.PROTECT, related_name="overpayment_decisions"
    )
    decision = models.CharField(max_length=16, choices=Decision.choices)
    excess_base_units = models.DecimalField(
        max_digits=78, decimal_places=0, help_text="confirmed funds minus the amount due, when decided"
    )
    actor = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="overpayment_decisions")
    reason = models.TextField()
    decided_at = models.DateTimeField()
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["decided_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["intent"],
                condition=models.Q(superseded_at__isnull=True),
                name="one_current_overpayment_decision",
            ),
            models.CheckConstraint(condition=~models.Q(reason=""), name="overpayment_decision_has_a_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} on {self.intent_id}"

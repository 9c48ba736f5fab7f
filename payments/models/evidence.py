"""Evidence (observations, resolutions), its consequences (transitions) and the outbox (events)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .ids import event_id
from .intents import PaymentIntent, PaymentState
from .merchants import NUMERIC_UINT256, Merchant
from .reference import Network, NetworkAsset

# Output index used for the native value of an EVM transaction (log indexes are >= 0).
EVM_NATIVE_OUTPUT_INDEX = -1


class ChainTip(models.Model):
    """The best block the gateway knows for a network; confirmations are counted against it."""

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="tip")
    height = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=80)
    updated_at = models.DateTimeField(auto_now=True)


class ScanCursor(models.Model):
    """How far a network has been scanned: committed in the same transaction as the observations the
    scan produced, so a crash resumes exactly where the last commit left off."""

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="scan_cursor")
    height = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=80)
    updated_at = models.DateTimeField(auto_now=True)


class ScanStatus(models.Model):
    """How a network's scans have gone: failed batches counted, the last failure kept (its message
    redacted: no node credentials) for the admin's network list. Written outside the batch's transaction,
    so a failed batch still leaves its error; a batch that succeeds resets `errors_in_a_row`."""

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="scan_status")
    errors_total = models.PositiveBigIntegerField(default=0)
    errors_in_a_row = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # The last batch that succeeded, and how many blocks it left behind the node's tip: what `/readyz` and
    # `/metrics` report as the network's scan health.
    last_success_at = models.DateTimeField(null=True, blank=True)
    lag_blocks = models.PositiveBigIntegerField(null=True, blank=True)


class ScannedBlock(models.Model):
    """A block hash the scanner saw at a height (each batch end): compared with the chain's to find the
    fork point after a reorg."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="+")
    height = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=80)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["network", "height"], name="scanned_block_unique")]


class ChainObservation(models.Model):
    """What a chain showed: one output (Bitcoin-family vout) or one transfer (EVM log index, or -1 for
    the native value) to a watched address. Unique per network, tx and index: recording it twice changes
    nothing. Block fields change as the chain includes it; `canonical` turns false when a reorg drops its
    block or the unconfirmed transaction is replaced or dropped."""

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    tx_hash = models.CharField(max_length=80)
    output_index = models.IntegerField()
    address = models.CharField(max_length=100, db_index=True, help_text="lower case for EVM")
    # The asset as recognised on this network; null for a token the gateway does not know.
    network_asset = models.ForeignKey(NetworkAsset, null=True, blank=True, on_delete=models.PROTECT)
    token_contract = models.CharField(max_length=64, blank=True, help_text="empty for the native coin")
    amount_base_units = models.DecimalField(**NUMERIC_UINT256)
    block_height = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=80, blank=True)
    block_time = models.DateTimeField(null=True, blank=True)
    position_in_block = models.PositiveIntegerField(null=True, blank=True)
    seen_unconfirmed_at = models.DateTimeField(null=True, blank=True)
    canonical = models.BooleanField(default=True)
    sender = models.CharField(
        max_length=100, blank=True, help_text="EVM: who sent it (lower case); empty for Bitcoin-family"
    )
    intent = models.ForeignKey(
        PaymentIntent, null=True, blank=True, on_delete=models.PROTECT, related_name="observations"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["network", "tx_hash", "output_index"], name="observation_network_tx_index_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(block_time__isnull=False) | models.Q(seen_unconfirmed_at__isnull=False),
                name="observation_has_first_seen_time",
            ),
            models.CheckConstraint(
                condition=models.Q(amount_base_units__gte=0), name="observation_amount_gte0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.network_id}:{self.tx_hash}:{self.output_index}"


class Resolution(models.Model):
    """A decision by an authorised person, recorded as evidence with actor, role, reason and time.
    Written only by `services.resolution_record`; never changed or deleted (a decision taken back is a
    new decision)."""

    class Kind(models.TextChoices):
        ACCEPT_LATE_PAYMENT = "accept_late_payment", "accept a late payment"
        ACCEPT_UNDERPAYMENT = "accept_underpayment", "accept an underpayment"
        MARK_PAID = "mark_paid", "mark paid"
        CANCEL = "cancel", "cancel the payment"
        EXTEND_DEADLINE = "extend_deadline", "extend the deadline for a top-up"
        REFUND_RECORDED = "refund_recorded", "refund recorded"

    intent = models.ForeignKey(PaymentIntent, on_delete=models.PROTECT, related_name="resolutions")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    observation = models.ForeignKey(ChainObservation, null=True, blank=True, on_delete=models.PROTECT)
    until = models.DateTimeField(
        null=True, blank=True, help_text="extend_deadline: the new deadline; cancel: when it took effect"
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    role = models.CharField(max_length=200, blank=True, help_text="the actor's role when deciding")
    reason = models.TextField()
    refund_tx_hash = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(kind__in=["extend_deadline", "cancel"]) | models.Q(until__isnull=False),
                name="resolution_window_kinds_have_a_time",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="accept_late_payment") | models.Q(observation__isnull=False),
                name="resolution_late_names_its_observation",
            ),
            models.CheckConstraint(condition=~models.Q(reason=""), name="resolution_has_a_reason"),
        ]


class StateTransition(models.Model):
    """A state change and the evidence that caused it. Unique on its cause: the same evidence applied
    twice, or by two workers at once, writes one row."""

    # indexed by transition_cause_unique (intent, cause)
    intent = models.ForeignKey(
        PaymentIntent, on_delete=models.PROTECT, related_name="transitions", db_index=False
    )
    from_state = models.CharField(max_length=20, choices=PaymentState.choices)
    to_state = models.CharField(max_length=20, choices=PaymentState.choices)
    cause = models.CharField(max_length=64)
    reason = models.CharField(max_length=200)
    verdict = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["intent", "cause"], name="transition_cause_unique"),
        ]


class Event(models.Model):
    """The outbox: one row per thing a merchant is told, with the payment's snapshot at that moment and a
    per-payment sequence number so a receiver can recognise a stale event."""

    id = models.CharField(primary_key=True, max_length=40, default=event_id, editable=False)
    # indexed by event_merchant_position and event_intent_sequence_unique, which start with them
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="events", db_index=False)
    intent = models.ForeignKey(PaymentIntent, on_delete=models.PROTECT, related_name="events", db_index=False)
    type = models.CharField(max_length=60)
    sequence = models.PositiveIntegerField()
    # "transition:<id>", or "<exception kind>:<network code>/<tx hash>/<output or log index>": up to
    # 18 + 40 (Network.code) + 1 + 66 + 1 + 11 = 137 characters
    dedupe_key = models.CharField(max_length=160)
    transition = models.OneToOneField(StateTransition, null=True, blank=True, on_delete=models.PROTECT)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The merchant-visible order of events, given when the event is dispatched to webhook endpoints
    # (null until then). Dispatches are serialised, so positions grow in commit order and a merchant
    # paging `GET /events` by position never skips an event that commits late.
    position = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["intent", "sequence"], name="event_intent_sequence_unique"),
            models.UniqueConstraint(fields=["intent", "dedupe_key"], name="event_intent_dedupe_unique"),
        ]
        indexes = [
            # the dispatch order: a burst of events with one created_at is read in order, not sorted
            models.Index(
                fields=["created_at", "intent", "sequence"],
                condition=models.Q(position__isnull=True),
                name="event_undispatched_order",
            ),
            models.Index(fields=["merchant", "position"], name="event_merchant_position"),
        ]

"""Evidence and settling: chain observations and tips recorded as the chains showed them, expiry, and
`payment_settle`, which every state change goes through: lock the intent, evaluate its evidence, apply
the verdict through the FSM, and write the transition (unique on its cause) and the events in the same
transaction."""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.db import connection, transaction

from gateway.metrics import OBSERVATIONS_RECORDED

from .. import policy
from ..chains.base import Transfer
from ..models import (
    ChainObservation,
    ChainTip,
    Network,
    NetworkAsset,
    PaymentAddress,
    PaymentIntent,
    PaymentState,
    Refund,
    StateTransition,
)
from ..selectors import (
    INTENT_RELATED,
    intent_evidence,
    transactions_representation,
)
from .events import events_write

# --- evidence ---------------------------------------------------------------------------------------

# Refunds whose destination the scanners watch: a payment to it is expected, or may be reorged away.
REFUND_WATCHED_STATES = (Refund.State.AWAITING_PAYMENT, Refund.State.DETECTED, Refund.State.CONFIRMED)

# The block fields of a row seen again (alias `o`, the new values in EXCLUDED): a sighting in a block sets
# them; an unconfirmed sighting keeps them while the row is canonical and clears them if its block was
# reorged out (it is unconfirmed again); the first mempool sighting is kept; seen again means canonical.
BLOCK_FIELDS_UPSERT = """
    block_height = CASE WHEN EXCLUDED.block_height IS NOT NULL THEN EXCLUDED.block_height
                        WHEN o.canonical THEN o.block_height END,
    block_hash = CASE WHEN EXCLUDED.block_height IS NOT NULL THEN EXCLUDED.block_hash
                      WHEN o.canonical THEN o.block_hash ELSE '' END,
    block_time = CASE WHEN EXCLUDED.block_height IS NOT NULL THEN EXCLUDED.block_time
                      WHEN o.canonical THEN o.block_time END,
    position_in_block = CASE WHEN EXCLUDED.block_height IS NOT NULL THEN EXCLUDED.position_in_block
                             WHEN o.canonical THEN o.position_in_block END,
    seen_unconfirmed_at = LEAST(o.seen_unconfirmed_at, EXCLUDED.seen_unconfirmed_at),
    canonical = TRUE,
    updated_at = EXCLUDED.updated_at
"""


def observation_record(*, transfer: Transfer, now: datetime) -> ChainObservation | None:
    """Record what a chain showed and settle the intent it pays. Recording the same transfer again
    changes nothing; a transfer now in a block updates its block fields; a transfer seen unconfirmed
    again after its block was reorged out is canonical again, unconfirmed. Returns None for a transfer
    to an address the gateway never derived."""
    network = Network.objects.get(code=transfer.network_code)
    address = transfer.address.lower() if network.chain == "evm" else transfer.address
    paid_to = PaymentAddress.objects.filter(address=address).values_list("intent__pk", flat=True).first()
    if paid_to is None:
        # A refund's destination is the customer's (it may be busy: an exchange's): only a transfer that
        # could pay one of its open refunds, in its asset and of its exact amount, is recorded.
        refunded_to = Refund.objects.filter(
            network_asset__network=network,
            network_asset__contract_address__iexact=transfer.token_contract.lower(),
            destination=address,
            amount_base_units=transfer.amount_base_units,
            state__in=REFUND_WATCHED_STATES,
        )
        if not refunded_to.exists():
            return None  # an address the gateway never derived, and no refund it would pay
    token = transfer.token_contract.lower()
    network_asset = (
        NetworkAsset.objects.filter(network=network, contract_address__iexact=token).first()
        if token
        else NetworkAsset.objects.filter(network=network, contract_address="").first()
    )
    if transfer.block_height is None and transfer.seen_unconfirmed_at is None:
        transfer = _with_seen_at(transfer, now)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO payments_chainobservation AS o
                    (network_id, tx_hash, output_index, address, network_asset_id, token_contract,
                     amount_base_units, block_height, block_hash, block_time, position_in_block,
                     seen_unconfirmed_at, canonical, sender, intent_id, recorded_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, TRUE, %s, %s, %s, %s)
                ON CONFLICT (network_id, tx_hash, output_index) DO UPDATE SET
                    sender = COALESCE(NULLIF(o.sender, ''), EXCLUDED.sender),
                    """
                + BLOCK_FIELDS_UPSERT
                + """
                RETURNING id, (xmax = 0) AS inserted
                """,
                [
                    network.pk,
                    transfer.tx_hash,
                    transfer.output_index,
                    address,
                    network_asset.pk if network_asset else None,
                    token,
                    transfer.amount_base_units,
                    transfer.block_height,
                    transfer.block_hash,
                    transfer.block_time,
                    transfer.position_in_block,
                    transfer.seen_unconfirmed_at,
                    transfer.sender.lower(),
                    paid_to,
                    now,
                    now,
                ],
            )
            observation_id, inserted = cursor.fetchone()
        if inserted:
            transaction.on_commit(OBSERVATIONS_RECORDED.labels(network.code).inc)
        if paid_to is not None:
            payment_settle(intent_id=paid_to, now=now)
        else:
            from .refunds import refunds_settle_at

            refunds_settle_at(network_id=network.pk, addresses={address}, now=now)
    return ChainObservation.objects.get(pk=observation_id)


def _with_seen_at(transfer: Transfer, now: datetime) -> Transfer:
    from dataclasses import replace

    return replace(transfer, seen_unconfirmed_at=now)


def observations_set_canonical(*, observation_ids: list[int], canonical: bool, now: datetime) -> None:
    """Mark observations (non-)canonical, e.g. when a reorg drops their block, and re-settle their intents."""
    with transaction.atomic():
        intent_ids = set(
            ChainObservation.objects.filter(pk__in=observation_ids, intent__isnull=False).values_list(
                "intent_id", flat=True
            )
        )
        refunded_to = set(
            ChainObservation.objects.filter(pk__in=observation_ids, intent__isnull=True).values_list(
                "network_id", "address"
            )
        )
        ChainObservation.objects.filter(pk__in=observation_ids).update(canonical=canonical, updated_at=now)
        for intent_id in sorted(intent_ids):  # a fixed lock order: no deadlock between two callers
            payment_settle(intent_id=intent_id, now=now)
        if refunded_to:
            from .refunds import refunds_settle_at

            for network_id, address in sorted(refunded_to):
                refunds_settle_at(network_id=network_id, addresses={address}, now=now)


def chain_tip_record(*, network_code: str, height: int, block_hash: str, now: datetime) -> int:
    """Store a network's tip and re-settle the payments waiting on confirmations there. Returns how many."""
    network = Network.objects.get(code=network_code)
    with transaction.atomic():
        ChainTip.objects.update_or_create(
            network=network, defaults={"height": height, "block_hash": block_hash}
        )
        waiting = list(
            PaymentIntent.objects.filter(
                network_asset__network=network, state__in=[PaymentState.DETECTED, PaymentState.CONFIRMING]
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    for intent_id in waiting:
        payment_settle(intent_id=intent_id, now=now)
    from .refunds import refunds_settle_due

    refunds_settle_due(now=now, network_id=network.pk, confirming_only=True)
    return len(waiting)


def expire_due_intents(*, now: datetime, batch: int = 500) -> int:
    """Settle unpaid intents whose window has closed (created/awaiting_payment -> expired)."""
    due = list(
        PaymentIntent.objects.filter(
            state__in=[PaymentState.CREATED, PaymentState.AWAITING_PAYMENT], expires_at__lte=now
        )
        .order_by("expires_at")
        .values_list("pk", flat=True)[:batch]
    )
    for intent_id in due:
        payment_settle(intent_id=intent_id, now=now)
    return len(due)


# --- settling state ---------------------------------------------------------------------------------


def payment_settle(
    *, intent_id: str, now: datetime, locked: PaymentIntent | None = None
) -> list[StateTransition]:
    """Bring the intent's state in line with its evidence. Idempotent: with no new evidence it writes
    nothing. Runs under the intent's row lock, so concurrent settles of one intent serialise."""
    with transaction.atomic(savepoint=False):
        intent = locked or (
            PaymentIntent.objects.select_for_update(of=("self",))
            .select_related(*INTENT_RELATED)
            .get(pk=intent_id)
        )
        facts, observations, resolutions, tips = intent_evidence(intent)
        verdict = policy.evaluate(facts, observations, resolutions, tips, now)
        cached = (
            intent.amount_seen_base_units,
            intent.amount_confirmed_base_units,
            intent.amount_refunded_base_units,
            intent.flags,
        )
        intent.amount_seen_base_units = verdict.amount_seen
        intent.amount_confirmed_base_units = verdict.amount_confirmed
        intent.amount_refunded_base_units = facts.refunded
        intent.flags = list(verdict.flags)
        events: list[tuple[str, str, StateTransition | None]] = []  # (type, dedupe key, transition)
        transitions: list[StateTransition] = []
        from_state = intent.state
        if verdict.state != from_state:
            previous = intent.transitions.order_by("-id").values_list("id", flat=True).first() or 0
            intent.transition_method(verdict.state)()
            transition = StateTransition.objects.create(
                intent=intent,
                from_state=from_state,
                to_state=verdict.state,
                cause=hashlib.sha256(f"{previous}:{verdict.fingerprint}".encode()).hexdigest(),
                reason=verdict.reason[:200],
                verdict=verdict.as_dict(),
            )
            transitions.append(transition)
            events.append((f"payment.{verdict.state}", f"transition:{transition.pk}", transition))
        events += _exception_events_due(intent=intent, verdict=verdict)
        changed = (
            intent.amount_seen_base_units,
            intent.amount_confirmed_base_units,
            intent.amount_refunded_base_units,
            intent.flags,
        ) != cached
        if events or transitions or changed:
            transactions = transactions_representation(intent, observations, tips)
            events_write(intent=intent, events=events, transactions=transactions)
    return transitions


def _exception_events_due(*, intent: PaymentIntent, verdict: policy.Verdict) -> list[tuple[str, str, None]]:
    """One event per exceptional observation (late, duplicate, wrong asset/network), once."""
    wanted = {f"{kind}:{'/'.join(map(str, key))}": kind for kind, key in verdict.exceptions}
    if not wanted:
        return []
    existing = set(intent.events.filter(dedupe_key__in=list(wanted)).values_list("dedupe_key", flat=True))
    return [
        (f"payment.{kind}_detected", dedupe_key, None)
        for dedupe_key, kind in sorted(wanted.items())
        if dedupe_key not in existing
    ]

"""Re-verification against the chain (the nightly run and `manage.py reverify_payments`): for every paid,
overpaid, refunded or confirming payment in a window, fetch the transactions `evaluate()` counts again
from the node (the same `transaction_transfers` a support agent's attach uses), check that each is still
in the block stored, to the same address, in the same asset and amount, then evaluate the payment again
on what the chain says and compare with the stored state.

This catches what a scanner cannot: a reorg while no scanner ran (deeper than its kept block hashes), a
row altered in the database, a node that was wrong. It reports and never repairs: each finding is a
`VerificationMismatch` (cleared when a later run finds the payment as stored), an event
`payment.verification_mismatch` to the merchant (once per distinct finding) and, from that event, a
support case. Chain calls run outside any transaction; only the findings are written."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from django.db import transaction

from payments import policy
from payments.chains.base import ChainBackend, TransactionNotFound, TransactionPending, Transfer
from payments.chains.redaction import redact_text
from payments.models import Network, PaymentIntent
from payments.selectors import INTENT_RELATED, intent_evidence, intents_transactions
from payments.services.events import events_write

from .models import VerificationMismatch, VerificationRun

logger = logging.getLogger(__name__)

REVERIFIED_STATES = ("paid", "overpaid", "refunded", "confirming")
EVENT = "payment.verification_mismatch"
Problem = VerificationMismatch.Problem


@dataclass(frozen=True)
class Finding:
    problem: str
    detail: str
    observation: policy.ObservationFacts | None = None


def check_transfer(
    stored: policy.ObservationFacts, address: str, chain: list[Transfer] | None
) -> tuple[Finding | None, policy.ObservationFacts]:
    """One counted transfer against what the node returned for its transaction (None: unknown to the
    node). Returns the finding, if any, and the transfer as the chain has it (non-canonical when gone)."""
    if chain is None:
        return Finding(Problem.NOT_FOUND, f"the node knows no transaction {stored.tx_hash}", stored), replace(
            stored, canonical=False
        )
    same = [
        t
        for t in chain
        if t.output_index == stored.output_index
        and t.address.lower() == address.lower()
        and t.token_contract.lower() == stored.token_contract
    ]
    if not same:
        return Finding(
            Problem.NO_TRANSFER, f"{stored.tx_hash} pays no output {stored.output_index} to {address}", stored
        ), replace(stored, canonical=False)
    found = same[0]
    if found.block_height is None:
        return Finding(
            Problem.NOT_IN_BLOCK,
            f"{stored.tx_hash} is no longer in block {stored.block_height} ({stored.block_hash}): unconfirmed",
            stored,
        ), replace(stored, canonical=False)
    truth = replace(
        stored,
        amount=found.amount_base_units,
        block_height=found.block_height,
        block_hash=found.block_hash,
        position_in_block=found.position_in_block,
    )
    if found.block_hash != stored.block_hash:
        return Finding(
            Problem.OTHER_BLOCK,
            f"{stored.tx_hash} is in block {found.block_height} ({found.block_hash}), stored in "
            f"{stored.block_height} ({stored.block_hash})",
            stored,
        ), truth
    if found.amount_base_units != stored.amount:
        return Finding(
            Problem.AMOUNT,
            f"{stored.tx_hash}: stored {stored.amount}, the chain says {found.amount_base_units}",
            stored,
        ), truth
    return None, truth


def reverify_payment(
    intent: PaymentIntent, backend_for: Callable[[Network], ChainBackend], now: datetime
) -> tuple[list[Finding], str, int]:
    """The findings for one payment, the state the chain's evidence gives, and how many transfers were
    fetched. Reads only (the database and the node)."""
    facts, observations, resolutions, stored_tips = intent_evidence(intent)
    verdict = policy.evaluate(facts, observations, resolutions, stored_tips, now)
    counted = {key for key, c in verdict.classifications.items() if c == policy.COUNTED}
    addresses = dict(intent_observation_addresses(intent))
    findings: list[Finding] = []
    truth: list[policy.ObservationFacts] = []
    fetched = 0
    for o in observations:
        if o.key not in counted or o.block_height is None:
            truth.append(o)  # not counted, or still in the mempool: nothing final to prove yet
            continue
        network = Network.objects.get(code=o.network)
        address = addresses[o.key]
        fetched += 1
        try:
            chain = backend_for(network).transaction_transfers(
                o.tx_hash, [address], now, block_hash=o.block_hash
            )
        except TransactionPending:
            chain = _pending(o, address)
        except TransactionNotFound:
            chain = None
        finding, checked = check_transfer(o, address, chain)
        truth.append(checked)
        if finding:
            findings.append(finding)
    # The stored tips, not the node's: confirmations the scanner has not counted yet are progress, not a
    # mismatch (reorgs and amounts were checked transfer by transfer above).
    evidence = policy.evaluate(facts, truth, resolutions, stored_tips, now)
    if evidence.state != intent.state:
        findings.append(
            Finding(
                Problem.STATE,
                f"stored {intent.state}, the chain's evidence gives {evidence.state} ({evidence.reason})",
            )
        )
    return findings, evidence.state, fetched


def _pending(o: policy.ObservationFacts, address: str) -> list[Transfer]:
    """The node has the transaction, only not in a block: the transfer as stored, unconfirmed."""
    return [Transfer(o.network, o.tx_hash, o.output_index, address, o.amount, o.token_contract)]


def intent_observation_addresses(intent: PaymentIntent):
    """(observation key, address) of the intent's observations."""
    for network, tx_hash, index, address in intent.observations.values_list(
        "network__code", "tx_hash", "output_index", "address"
    ):
        yield (network, tx_hash, index), address


def reverify(
    *,
    since: datetime,
    now: datetime,
    backend_for: Callable[[Network], ChainBackend],
    until: datetime | None = None,
    merchant_id: str | None = None,
) -> VerificationRun:
    run = VerificationRun.objects.create(started_at=now, since=since, until=until)
    intents = PaymentIntent.objects.filter(state__in=REVERIFIED_STATES, created_at__gte=since)
    if until is not None:
        intents = intents.filter(created_at__lt=until)
    if merchant_id:
        intents = intents.filter(merchant_id=merchant_id)
    errors: list[str] = []
    for intent in (
        intents.select_related(*INTENT_RELATED).order_by("created_at", "pk").iterator(chunk_size=200)
    ):
        try:
            findings, evidence_state, fetched = reverify_payment(intent, backend_for, now)
            if not _record(run, intent, findings, evidence_state, now):
                continue  # the payment changed meanwhile (a scan settled it): next run
        except Exception as exc:  # one node's failure (or one payment's) never stops the others
            url = intent.network_asset.network.rpc_url if intent.network_asset else ""
            message = redact_text(str(exc), url=url)
            logger.warning("re-verification of %s failed: %s", intent.pk, message)
            errors.append(f"{intent.pk}: {message}"[:300])
            continue
        run.payments += 1
        run.transactions += fetched
        run.mismatches += len(findings)
    run.finished_at = now
    run.errors = "\n".join(errors)[:10_000]
    run.save()
    return run


def _record(
    run: VerificationRun, intent: PaymentIntent, findings: list[Finding], evidence_state: str, now
) -> bool:
    """Store the findings, clear what is no longer found, and tell the merchant of each new finding; under
    the payment's lock, and only if it is still as it was read (False otherwise: nothing written)."""
    with transaction.atomic():
        locked = (
            PaymentIntent.objects.select_for_update(of=("self",))
            .select_related(*INTENT_RELATED)
            .get(pk=intent.pk)
        )
        if (locked.state, locked.event_sequence) != (intent.state, intent.event_sequence):
            return False
        keys = {_key(f) for f in findings}
        open_rows = list(VerificationMismatch.objects.filter(intent=locked, cleared_at__isnull=True))
        known = {(m.problem, m.tx_hash, m.output_index) for m in open_rows}
        for row in open_rows:
            if (row.problem, row.tx_hash, row.output_index) not in keys:
                row.cleared_at = now
                row.save(update_fields=["cleared_at"])
        new = [f for f in findings if _key(f) not in known]
        rows = VerificationMismatch.objects.bulk_create(
            [
                VerificationMismatch(
                    run=run,
                    intent=locked,
                    network=f.observation.network if f.observation else "",
                    tx_hash=f.observation.tx_hash if f.observation else "",
                    output_index=f.observation.output_index if f.observation else None,
                    problem=f.problem,
                    detail=f.detail[:300],
                    stored_state=locked.state,
                    evidence_state=evidence_state,
                    found_at=now,
                )
                for f in new
            ]
        )
        if not rows:
            return True
        existing = set(locked.events.filter(type=EVENT).values_list("dedupe_key", flat=True))
        events = []
        for row in rows:
            dedupe = f"verification:{row.problem}:{row.tx_hash}:{row.output_index}:{row.pk}"[:100]
            if dedupe not in existing:
                events.append((EVENT, dedupe, None))
        events_write(
            intent=locked,
            events=events,
            transactions=intents_transactions([locked])[locked.pk],
            details={
                "verification": {
                    "run": run.pk,
                    "evidence_state": evidence_state,
                    "findings": [
                        {
                            "problem": r.problem,
                            "detail": r.detail,
                            "tx_hash": r.tx_hash,
                            "output_index": r.output_index,
                        }
                        for r in rows
                    ],
                }
            },
        )
    return True


def _key(f: Finding) -> tuple:
    o = f.observation
    return (f.problem, o.tx_hash if o else "", o.output_index if o else None)

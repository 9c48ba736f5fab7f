"""Escalating a wrong-network payment to a support lead, with the facts a lead needs to help the merchant
recover the funds: where they arrived, how much (in that asset's units), the transaction, and, for EVM
networks, that the merchant's own key controls the address there (one xpub derives the same address on
every EVM network), so the merchant can move them without the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction

from payments.errors import Conflict
from payments.models import Network, PaymentIntent
from payments.selectors import display_address, intents_transactions

from .cases import cases_open_for_intent
from .models import CaseNote, SupportCase
from .payment_actions import note_check, payment_audit, payment_require

WRONG_NETWORK = "wrong_network"


@dataclass(frozen=True)
class StrayFunds:
    """Funds that arrived at the intent's address on another network than its own."""

    network: str  # the network's name
    network_code: str
    asset: str | None  # None: a token the gateway does not know
    amount: str  # in the asset's units, with its symbol (base units for an unknown token)
    tx_hash: str
    same_key: bool  # an EVM network: the merchant's own key controls the address there
    address: str


def stray_funds(intent: PaymentIntent) -> list[StrayFunds]:
    """The recovery facts of a wrong-network payment, from the evidence the API shows."""
    na = intent.network_asset
    own = na.network.code if na else None
    stray = [t for t in intents_transactions([intent])[intent.pk] if t["network"] != own and t["canonical"]]
    networks = {n.code: n for n in Network.objects.filter(code__in={t["network"] for t in stray})}
    facts = []
    for t in stray:
        network = networks[t["network"]]
        value = t["amount"]["value"]
        amount = (
            f"{value} {t['asset']}"
            if value is not None
            else f"{t['amount']['base_units']} base units of {t['token_contract']}"
        )
        facts.append(
            StrayFunds(
                network=network.name,
                network_code=network.code,
                asset=t["asset"],
                amount=amount,
                tx_hash=t["tx_hash"],
                same_key=network.chain == "evm" and na is not None and na.network.chain == "evm",
                address=display_address(intent) or "",
            )
        )
    return facts


def wrong_network_escalate(
    *, actor: User, intent: PaymentIntent, note: str, now: datetime, **context
) -> SupportCase:
    """Mark the payment's wrong-network case escalated (opening it if the event reader has not yet), with
    the note on its thread. Audited; the merchant is not sent anything (the lead contacts them)."""
    payment_require(actor, intent)
    note = note_check(note)
    if WRONG_NETWORK not in (intent.flags or []):
        raise Conflict("the payment is not flagged wrong network", code="not_wrong_network")
    facts = stray_funds(intent)
    with transaction.atomic():
        # The case the stream reader opens (or will): opened now under its key if the reader is behind.
        cases_open_for_intent(intent_id=intent.pk, kind=SupportCase.Kind.WRONG_NETWORK, now=now)
        case = (
            SupportCase.objects.select_for_update()
            .filter(intent=intent, kind=SupportCase.Kind.WRONG_NETWORK)
            .order_by("opened_at", "id")
            .first()
        )
        if case is None:  # flagged without an exception event: cannot happen through the services
            raise Conflict("the payment has no wrong-network event to open a case from", code="no_case")
        if case.status == SupportCase.Status.RESOLVED:
            raise Conflict(
                "the payment's wrong-network case is resolved: reopen it first", code="case_resolved"
            )
        if case.escalated_at is not None:
            raise Conflict(
                "the payment's wrong-network case is escalated already", code="case_already_escalated"
            )
        before = {
            "escalated_at": case.escalated_at.isoformat() if case.escalated_at else None,
            "status": case.status,
        }
        case.escalated_at, case.escalated_by = now, actor
        if case.status == SupportCase.Status.OPEN:
            case.status = SupportCase.Status.IN_PROGRESS
        case.save(update_fields=["escalated_at", "escalated_by", "status"])
        CaseNote.objects.create(case=case, author=actor.get_username(), body=note, created_at=now)
        after = {
            "escalated_at": now.isoformat(),
            "status": case.status,
            "case": case.pk,
            "funds": [{"network": f.network_code, "amount": f.amount, "tx_hash": f.tx_hash} for f in facts],
        }
        payment_audit(actor, "payment.wrong_network_escalated", intent, before, after, note, now, **context)
    return case

"""What the payment page shows: one payment's whole story (what was asked, what the chains showed, what
the gateway concluded and told the merchant, what people decided and did), read in a bounded number of
queries, every amount in the asset's units with its symbol. Reads only: the "check now" verdict is
evaluated afresh from the stored evidence and shown, never stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Prefetch
from django.urls import reverse

from payments import policy
from payments.models import (
    ChainObservation,
    Event,
    PaymentIntent,
    Refund,
    Resolution,
    SettlementLeg,
    StateTransition,
    WebhookDelivery,
)
from payments.pricing import format_amount
from payments.selectors import amount_remaining, display_address, intent_evidence, intent_facts, price_text
from payments.selectors_refunds import refund_payment_uri

from .models import AuditEntry, SupportCase

# The audit log names a payment by this object type and the payment's id.
AUDIT_OBJECT_TYPE = "payment_intent"

CLASSIFICATION_TEXT = {
    policy.COUNTED: "counted",
    policy.DUPLICATE: "duplicate (the payment was complete before it)",
    policy.LATE: "late (first seen after the deadline)",
    policy.AFTER_MONITORING_WINDOW: "after the monitoring window",
    policy.WRONG_ASSET: "wrong asset",
    policy.WRONG_NETWORK: "wrong network",
    policy.NOT_CANONICAL: "not canonical (replaced, dropped or reorganised away)",
}


def amount_text(amount: int | None, decimals: int | None, code: str | None) -> str:
    """Base units as the asset's units with its symbol ("12.500000 USDC"); "-" when there is no amount."""
    if amount is None or decimals is None:
        return "-"
    return f"{format_amount(int(amount), decimals)} {code}".strip()


def intent_amount_text(intent: PaymentIntent, amount: int | None, missing: str | None = "-") -> str | None:
    """`amount_text` in the intent's asset; `missing` while it has no asset or there is no amount."""
    na = intent.network_asset
    if na is None or amount is None:
        return missing
    return amount_text(amount, na.decimals, na.asset.code)


def checkout_url(intent: PaymentIntent) -> str:
    """The customer's page, as the API gives it to the merchant."""
    return settings.PUBLIC_BASE_URL + reverse("checkout-page", kwargs={"token": intent.checkout_token})


@dataclass(frozen=True)
class CheckNow:
    """The verdict of a fresh evaluation beside what is stored; `differences` names what disagrees."""

    verdict: policy.Verdict
    evaluated_at: datetime
    tips: dict[str, int]  # the chain tips the confirmations were counted against
    rows: list[tuple[str, str, str, bool]]  # (what, stored, evaluated now, differs)

    @property
    def differences(self) -> list[str]:
        return [what for what, _, _, differs in self.rows if differs]


def check_now(intent: PaymentIntent, *, now: datetime) -> CheckNow:
    """Re-run `policy.evaluate` on the payment's stored evidence at `now` (nothing is written)."""
    facts, observations, resolutions, tips = intent_evidence(intent)
    verdict = policy.evaluate(facts, observations, resolutions, tips, now)
    na = intent.network_asset
    decimals, code = (na.decimals, na.asset.code) if na else (None, None)

    def row(what: str, stored: str, fresh: str) -> tuple[str, str, str, bool]:
        return (what, stored, fresh, stored != fresh)

    rows = [
        row("state", intent.state, verdict.state),
        row(
            "amount seen",
            amount_text(intent.amount_seen_base_units, decimals, code),
            amount_text(verdict.amount_seen, decimals, code),
        ),
        row(
            "amount confirmed",
            amount_text(intent.amount_confirmed_base_units, decimals, code),
            amount_text(verdict.amount_confirmed, decimals, code),
        ),
        row("flags", ", ".join(intent.flags or []) or "none", ", ".join(verdict.flags) or "none"),
    ]
    return CheckNow(verdict=verdict, evaluated_at=now, tips=tips, rows=rows)


def _quote(intent: PaymentIntent) -> dict[str, Any] | None:
    quote, na = intent.quote, intent.network_asset
    if quote is None or na is None:
        return None
    return {
        "rate": f"1 {na.asset.code} = {quote.rate.normalize():f} {quote.price_currency}",
        "source": quote.source,
        "rate_time": quote.rate_time,
        "quoted_at": quote.quoted_at,
        "expires_at": quote.expires_at,
        "amount": amount_text(quote.amount_base_units, na.decimals, na.asset.code),
        "rounded_to_decimals": quote.rounded_to_decimals,
    }


def _amounts(intent: PaymentIntent) -> list[tuple[str, str]]:
    na = intent.network_asset
    decimals, code = (na.decimals, na.asset.code) if na else (None, None)
    remaining = amount_remaining(intent)
    return [
        ("amount due", amount_text(intent.amount_due_base_units, decimals, code)),
        ("seen (counted)", amount_text(intent.amount_seen_base_units, decimals, code)),
        ("confirmed", amount_text(intent.amount_confirmed_base_units, decimals, code)),
        ("remaining", amount_text(remaining, decimals, code) if remaining is not None else "-"),
        ("refunded (confirmed)", amount_text(intent.amount_refunded_base_units, decimals, code)),
    ]


def _transactions(intent: PaymentIntent, verdict: policy.Verdict, tips: dict[str, int]) -> list[dict]:
    rows = ChainObservation.objects.filter(intent=intent).select_related("network", "network_asset__asset")
    found = []
    for o in sorted(rows, key=lambda o: (o.block_height is None, o.block_height or 0, o.recorded_at, o.pk)):
        na = o.network_asset
        if na is not None:
            asset, amount = na.asset.code, amount_text(o.amount_base_units, na.decimals, na.asset.code)
        else:
            asset = f"unknown token {o.token_contract}" if o.token_contract else "unknown"
            amount = f"{int(o.amount_base_units)} base units"
        key = (o.network.code, o.tx_hash, o.output_index)
        classification = verdict.classifications.get(key)
        found.append(
            {
                "network": o.network.code,
                "tx_hash": o.tx_hash,
                "output_index": o.output_index,
                "asset": asset,
                "amount": amount,
                "block_height": o.block_height,
                "confirmations": policy.confirmations(
                    o.block_height if o.canonical else None, tips.get(o.network.code)
                ),
                "canonical": o.canonical,
                "first_seen_at": min(t for t in (o.seen_unconfirmed_at, o.block_time) if t is not None),
                "classification": classification,
                "classification_text": CLASSIFICATION_TEXT.get(classification, classification or "-"),
                "explorer_url": o.network.explorer_url(o.tx_hash),
            }
        )
    return found


def _events(intent: PaymentIntent) -> list[Event]:
    """Events oldest first, each with its deliveries and their attempts (three queries in all)."""
    deliveries = WebhookDelivery.objects.select_related("endpoint").order_by("created_at", "id")
    return list(
        Event.objects.filter(intent=intent)
        .order_by("sequence")
        .prefetch_related(Prefetch("deliveries", queryset=deliveries), "deliveries__attempt_log")
    )


def _duration_text(duration: timedelta) -> str:
    minutes = int(duration.total_seconds()) // 60
    return f"{minutes // 60} h" if minutes and minutes % 60 == 0 else f"{minutes} min"


def _resolutions(intent: PaymentIntent) -> list[Resolution]:
    found = list(
        Resolution.objects.filter(intent=intent)
        .select_related("actor", "observation")
        .order_by("created_at", "id")
    )
    for resolution in found:
        resolution.kind_text = resolution.kind.replace("_", " ")  # "accept late payment"
    return found


def _refunds(intent: PaymentIntent) -> list[dict]:
    rows = Refund.objects.filter(intent=intent).select_related(
        "network_asset__asset", "network_asset__network", "observation"
    )
    return [
        {
            "refund": r,
            "amount": amount_text(r.amount_base_units, r.network_asset.decimals, r.network_asset.asset.code),
            "payment_uri": refund_payment_uri(r),
            "qr": _qr_data_uri(refund_payment_uri(r)) if r.state == Refund.State.AWAITING_PAYMENT else None,
        }
        for r in rows.order_by("created_at")
    ]


def _qr_data_uri(uri: str | None) -> str | None:
    """The payment URI as a QR code in an <img> (for the merchant's phone wallet, or to send on)."""
    if not uri:
        return None
    import segno

    return segno.make(uri, micro=False, error="m").svg_data_uri(scale=3, border=4)


def _settlements(intent: PaymentIntent) -> list[dict]:
    """The legs of settlements that moved this payment's funds, with their transaction."""
    legs = SettlementLeg.objects.filter(intent=intent).select_related(
        "settlement__transaction",
        "settlement__network",
        "settlement__fee_asset__asset",
        "network_asset__asset",
    )
    found = []
    for leg in legs.order_by("settlement__seen_at", "position"):
        settlement, na, fee_na = leg.settlement, leg.network_asset, leg.settlement.fee_asset
        found.append(
            {
                "leg": leg,
                "amount": amount_text(leg.amount_base_units, na.decimals, na.asset.code) if na else "-",
                "fee": (
                    amount_text(leg.fee_base_units, fee_na.decimals, fee_na.asset.code)
                    if fee_na and leg.fee_base_units is not None
                    else "-"
                ),
                "fiat": f"{leg.fiat_value.quantize(Decimal('0.01')):f}" if leg.fiat_value is not None else "",
                "explorer_url": settlement.network.explorer_url(settlement.transaction.tx_hash),
            }
        )
    return found


def payment_page(intent: PaymentIntent, *, now: datetime, show_cases: bool, show_audit: bool) -> dict:
    """The page's content for one payment (`intent` with its network asset, address, quote and merchant
    loaded). Cases and audit entries are read only for those who may see them."""
    checked = check_now(intent, now=now)
    na = intent.network_asset
    deadline = intent_facts(intent).deadline
    window = timedelta(minutes=intent.late_payment_window_minutes)
    return {
        "intent": intent,
        "price": f"{price_text(intent)} {intent.price_currency}",
        "asset": na.asset.code if na else None,
        "network": na.network.code if na else None,
        "address": display_address(intent),
        "quote": _quote(intent),
        "amounts": _amounts(intent),
        "deadline": deadline,
        "late_window_text": _duration_text(window),
        "monitored_until": deadline + window,
        "checkout_url": checkout_url(intent),
        "check": checked,
        "transactions": _transactions(intent, checked.verdict, checked.tips),
        "transitions": list(StateTransition.objects.filter(intent=intent).order_by("id")),
        "events": _events(intent),
        "resolutions": _resolutions(intent),
        "refunds": _refunds(intent),
        "settlements": _settlements(intent),
        "cases": (
            list(
                SupportCase.objects.filter(intent=intent).select_related("assignee").prefetch_related("notes")
            )
            if show_cases
            else None
        ),
        "audit_entries": (
            list(AuditEntry.objects.filter(object_type=AUDIT_OBJECT_TYPE, object_id=intent.pk))
            if show_audit
            else None
        ),
    }

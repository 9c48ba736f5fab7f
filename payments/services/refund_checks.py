"""What a refund may be: its amount for each way of asking (within what the payment received, less what
other refunds hold), its destination (an address of the payment's network, never the gateway's own or a
treasury), its reason. Read-only checks shared by `refunds` (under the payment's lock) and by support's
dangerous action (when a lead asks, and again when a second lead approves)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from django.db.models import Q, Sum

from .. import pricing
from ..chains.address import address_normalize
from ..errors import Conflict, InvalidRequest
from ..models import PaymentAddress, PaymentIntent, Refund, TreasuryAddress
from ..selectors_refunds import amount_received
from .reference import default_rate_source

State = Refund.State
AmountKind = Refund.AmountKind
REASON_MAX_CHARACTERS = 4000

Fixed = tuple[int, dict]  # an amount in base units, and the rate evidence of a fiat amount ({} otherwise)


def amount_held(intent: PaymentIntent, *, exclude: str | None = None) -> int:
    """What the intent's refunds already claim of the amount received: every refund not canceled and
    not failed (a failed one claims what paid it, if anything did)."""
    refunds = Refund.objects.filter(intent=intent).filter(
        Q(state__in=Refund.HOLDING_STATES) | Q(state=State.FAILED, observation__isnull=False)
    )
    if exclude:
        refunds = refunds.exclude(pk=exclude)
    return int(refunds.aggregate(total=Sum("amount_base_units"))["total"] or 0)


def refund_amount(
    *,
    intent: PaymentIntent,
    kind: str,
    value: str | None,
    currency: str | None,
    received: int,
    held: int,
    now,
) -> tuple[int, dict]:
    """The amount in base units for each way of asking, and the rate evidence of a fiat amount."""
    na = intent.network_asset
    if kind == AmountKind.RECEIVED:
        return received - held, {}
    if kind == AmountKind.EXCESS:
        # What was received beyond the amount due and not refunded yet (a second "excess" refund finds
        # the first one's amount held: no excess is refunded twice).
        excess = received - int(intent.amount_due_base_units or 0) - held
        if excess <= 0:
            raise Conflict(
                "this payment received no more than was due, or its excess is refunded already",
                code="no_excess",
            )
        return excess, {}
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise InvalidRequest(
            "amount.value is a decimal number", code="invalid_amount", param="amount.value"
        ) from None
    if not number.is_finite() or number <= 0:
        raise InvalidRequest("amount.value is a positive number", code="invalid_amount", param="amount.value")
    if kind == AmountKind.CUSTOM:
        if -number.as_tuple().exponent > na.decimals:
            raise InvalidRequest(
                f"{na.asset.code} has {na.decimals} decimals", code="invalid_amount", param="amount.value"
            )
        return int(number.scaleb(na.decimals)), {}
    if kind == AmountKind.FIAT:
        places = pricing.FIAT_CURRENCIES.get((currency or "").upper())
        if places is None:
            raise InvalidRequest(
                f"amount.currency is one of {', '.join(pricing.FIAT_CURRENCIES)}",
                code="invalid_currency",
                param="amount.currency",
            )
        if -number.as_tuple().exponent > places:
            raise InvalidRequest(
                f"{currency} has {places} decimals", code="invalid_amount", param="amount.value"
            )
        currency = currency.upper()
        rate = default_rate_source().rate(asset=na.asset.code, currency=currency, now=now)
        # Rounded down to the base unit: never more than the fiat amount asked for.
        units = int((number / rate.rate).scaleb(na.decimals).to_integral_value(rounding=ROUND_DOWN))
        evidence = {
            "fiat_amount": number,
            "fiat_currency": currency,
            "rate": rate.rate,
            "rate_source": rate.source,
            "rate_time": rate.time,
        }
        return units, evidence
    raise InvalidRequest(
        f"amount.kind is one of {', '.join(AmountKind.values)}",
        code="invalid_amount_kind",
        param="amount.kind",
    )


def destination_normalize(intent: PaymentIntent, text: str, *, param: str = "destination") -> str:
    """The customer's address for the payment's network; never one of the gateway's payment addresses
    (a transfer there would pay that payment, not the refund) nor a merchant's treasury (a sweep of the
    same amount would pass for the refund)."""
    network = intent.network_asset.network
    address = address_normalize(
        chain=network.chain,
        bech32_hrp=network.bech32_hrp,
        base58_versions=network.base58_versions,
        text=text,
        param=param,
    )
    if (
        PaymentAddress.objects.filter(address=address).exists()
        or TreasuryAddress.objects.filter(network=network, address=address).exists()
    ):
        raise InvalidRequest(
            "a refund goes to the customer's own address, not to one of the gateway's or a merchant's "
            "treasury",
            code="destination_not_allowed",
            param=param,
        )
    return address


def reason_clean(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidRequest("a refund needs a reason", code="parameter_missing", param="reason")
    if len(text) > REASON_MAX_CHARACTERS:
        raise InvalidRequest(
            f"a reason has at most {REASON_MAX_CHARACTERS} characters", code="reason_too_long", param="reason"
        )
    return text


def refund_check(
    *,
    intent: PaymentIntent,
    amount_kind: str,
    value: str | None = None,
    currency: str | None = None,
    destination: str = "",
    now: datetime,
    fixed: Fixed | None = None,
) -> Fixed:
    """What `refund_create` would refund (base units, and a fiat amount's rate evidence), or the reason
    it would refuse (read-only: support checks a refund when asking, and a second person approves exactly
    that amount: `fixed`, checked again to fit within what is left)."""
    if intent.network_asset is None:
        raise Conflict("this payment has no asset yet: nothing was received", code="nothing_received")
    received = amount_received(intent)
    if received <= 0:
        raise Conflict("this payment received nothing to refund", code="nothing_received")
    held = amount_held(intent)
    if fixed is None:
        fixed = refund_amount(
            intent=intent,
            kind=amount_kind,
            value=value,
            currency=currency,
            received=received,
            held=held,
            now=now,
        )
    _within(fixed[0], received, held)
    if destination:
        destination_normalize(intent, destination)
    return fixed


def _within(amount: int, received: int, held: int) -> None:
    if amount <= 0 or held + amount > received:
        raise Conflict(
            f"refunds may total at most what was received ({received} base units); {held} are already "
            f"refunded or being refunded, so at most {max(received - held, 0)} remain",
            code="refund_exceeds_received",
        )

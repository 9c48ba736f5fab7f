"""Reads of refunds: what a payment received and refunded, a refund's representation for the API and its
events, its payment URI for the merchant's wallet, and the signed link the customer enters the
destination through."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core import signing
from django.db.models import Sum
from django.urls import reverse

from .models import ChainObservation, Outflow, PaymentIntent, Refund
from .pricing import FIAT_CURRENCIES, format_amount
from .selectors import asset_payment_uri

REFUND_LINK_SALT = "payments.refund-destination"
PAYABLE = (Refund.State.AWAITING_PAYMENT, Refund.State.DETECTED)


def amount_received(intent: PaymentIntent) -> int:
    """Everything the chain shows the intent's address received in its asset on its network, in a block
    (counted, duplicate, late alike; not funds reorged away, not another asset, and not a transaction still
    in the mempool, which its sender may yet replace): the most refunds may total."""
    na = intent.network_asset
    if na is None:
        return 0
    rows = ChainObservation.objects.filter(
        intent=intent,
        canonical=True,
        block_height__isnull=False,
        network_id=na.network_id,
        token_contract=na.contract_address.lower(),
    ).exclude(  # the merchant's own money moved there (a consolidation) is no customer's to refund
        tx_hash__in=Outflow.objects.filter(
            network_id=na.network_id, intent__merchant_id=intent.merchant_id
        ).values("tx_hash")
    )
    return int(rows.aggregate(total=Sum("amount_base_units"))["total"] or 0)


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=REFUND_LINK_SALT, sep=".")  # no ":" in a URL path


def refund_link_token(refund: Refund) -> str:
    """The refund's id, signed with the server's secret and timestamped: `<id>.<time>.<signature>`."""
    return _signer().sign(refund.pk)


def refund_from_link(token: str) -> Refund | None:
    """The refund a link names, if the signature holds and the link is younger than the refund's window
    (the page also refuses a refund past `expires_at` or no longer waiting for a destination)."""
    if not token or len(token) > 200:
        return None
    try:
        refund_id = _signer().unsign(token, max_age=timedelta(days=90))
    except signing.BadSignature:  # also SignatureExpired
        return None
    return (
        Refund.objects.select_related("network_asset__asset", "network_asset__network", "intent")
        .filter(pk=refund_id)
        .first()
    )


def refund_destination_path(refund: Refund) -> str | None:
    """The page where the customer enters the destination (a relative URL: the merchant's site or the
    gateway's public host prefixes it), while the refund waits for one."""
    if refund.destination or refund.state not in (Refund.State.REQUESTED, Refund.State.APPROVED):
        return None
    return reverse("refund-page", args=[refund_link_token(refund)])


def refund_payment_uri(refund: Refund) -> str | None:
    """What the merchant's wallet pays: the exact amount to the destination (BIP21 / EIP-681)."""
    if not refund.destination:
        return None
    return asset_payment_uri(refund.network_asset, refund.destination, int(refund.amount_base_units))


def qr_svg(uri: str) -> bytes:
    """The QR code of a payment URI, as SVG (what a phone wallet scans)."""
    import io

    import segno

    out = io.BytesIO()
    segno.make(uri, micro=False, error="m").save(out, kind="svg", scale=5, border=4, xmldecl=False)
    return out.getvalue()


def _amount(base_units, decimals: int) -> dict[str, str]:
    return {"value": format_amount(int(base_units), decimals), "base_units": str(int(base_units))}


def refund_representation(refund: Refund) -> dict[str, Any]:
    na = refund.network_asset
    observation = refund.observation
    fiat = None
    if refund.fiat_amount is not None:
        places = FIAT_CURRENCIES.get(refund.fiat_currency, 2)
        fiat = {
            "amount": f"{refund.fiat_amount.quantize(Decimal(1).scaleb(-places)):f}",
            "currency": refund.fiat_currency,
            "rate": f"{refund.rate.normalize():f}",
            "rate_source": refund.rate_source,
            "rate_time": refund.rate_time.isoformat() if refund.rate_time else None,
        }
    return {
        "id": refund.id,
        "object": "refund",
        "payment_intent": refund.intent_id,
        "state": refund.state,
        "asset": na.asset.code,
        "network": na.network.code,
        "amount": _amount(refund.amount_base_units, na.decimals),
        "amount_kind": refund.amount_kind,
        "fiat": fiat,
        "reason": refund.reason,
        "destination": refund.destination or None,
        "destination_url": refund_destination_path(refund),
        "payment_uri": refund_payment_uri(refund),
        "payment_qr_url": (
            reverse("refund-qr", args=[refund.pk]) if refund.destination and refund.state in PAYABLE else None
        ),
        "transaction": (
            {
                "tx_hash": observation.tx_hash,
                "output_index": observation.output_index,
                "block_height": observation.block_height if observation.canonical else None,
            }
            if observation is not None
            else None
        ),
        "failure_reason": refund.failure_reason or None,
        "expires_at": refund.expires_at.isoformat(),
        "created_at": refund.created_at.isoformat(),
        "updated_at": refund.updated_at.isoformat(),
    }

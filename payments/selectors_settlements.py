"""Reads of outflows and settlements: their representation for the API, event payloads and the console."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from .models import Merchant, OutflowTransaction, Settlement
from .pricing import FIAT_CURRENCIES, format_amount


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _fiat_text(value: Decimal, currency: str) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-FIAT_CURRENCIES.get(currency, 2))):f}"


def settlement_queryset() -> QuerySet[Settlement]:
    return Settlement.objects.select_related("network", "transaction", "fee_asset__asset").prefetch_related(
        "legs__network_asset__asset"
    )


def settlements_for_merchant(merchant: Merchant) -> QuerySet[Settlement]:
    return settlement_queryset().filter(merchant=merchant)


def _amount(base_units, decimals: int | None) -> dict[str, str | None]:
    value = int(base_units)
    return {
        "value": format_amount(value, decimals) if decimals is not None else None,
        "base_units": str(value),
    }


def settlement_representation(settlement: Settlement) -> dict[str, Any]:
    """A settlement as the API returns it and as settlement events carry it: its transaction, where the
    money went (each destination classified), the legs (payment, asset, amount, fee share, fiat value)."""
    tx: OutflowTransaction = settlement.transaction
    fee_decimals = settlement.fee_asset.decimals if settlement.fee_asset_id else None
    legs = []
    for leg in settlement.legs.all():
        na = leg.network_asset
        legs.append(
            {
                "payment_intent": leg.intent_id,
                "asset": na.asset.code if na else None,
                "token_contract": leg.token_contract or None,
                "amount": _amount(leg.amount_base_units, na.decimals if na else None),
                "network_fee": (
                    _amount(leg.fee_base_units, fee_decimals) if leg.fee_base_units is not None else None
                ),
                "fiat_value": (
                    {
                        "amount": _fiat_text(leg.fiat_value, leg.fiat_currency),
                        "currency": leg.fiat_currency,
                        "rate": f"{leg.rate.normalize():f}",
                        "rate_source": leg.rate_source,
                        "rate_time": _iso(leg.rate_time),
                    }
                    if leg.fiat_value is not None
                    else None
                ),
            }
        )
    return {
        "id": settlement.id,
        "object": "settlement",
        "kind": settlement.kind,
        "canonical": settlement.canonical,
        "network": settlement.network.code,
        "tx_hash": tx.tx_hash,
        "block_height": tx.block_height if tx.canonical else None,
        "block_hash": (tx.block_hash or None) if tx.canonical else None,
        "seen_at": _iso(settlement.seen_at),
        "network_fee": (
            _amount(settlement.fee_base_units, fee_decimals)
            if settlement.fee_base_units is not None
            else None
        ),
        "fee_asset": settlement.fee_asset.asset.code if settlement.fee_asset_id else None,
        "destinations": [
            {
                "index": d["index"],
                "address": d["address"] or None,
                "amount_base_units": d["amount"],
                "token_contract": d.get("token_contract") or None,
                "kind": d["kind"],
            }
            for d in settlement.destinations
        ],
        "legs": legs,
        "created_at": _iso(settlement.created_at),
        "updated_at": _iso(settlement.updated_at),
    }

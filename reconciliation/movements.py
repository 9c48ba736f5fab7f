"""The detail behind the per-order rows: one row per money movement out of a payment, so finance can tie
each sweep and refund to its transaction, amount, fee and fiat value. A settlement leg (the part of one
outflow transaction that moved one payment's funds: a sweep, a consolidation, a refund paid from the
payment's address, an unknown outflow) or a refund (paid from anywhere, verified at its destination).

Same reading as the reconciliation (one statement, a server-side cursor in a transaction, keyset pages);
its own versioned column set. Ordered by the time the movement was seen, then kind and id."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from payments.pricing import FIAT_CURRENCIES, format_amount

from .selectors import FilterColumns, RowFilter, stream_rows, time_text, where_sql

MOVEMENT_COLUMN_SET = "movements/1"
MOVEMENT_COLUMNS = (
    "merchant_id",
    "payment_id",
    "merchant_order_id",
    "movement",
    "movement_id",
    "status",
    "asset",
    "network",
    "transaction_hash",
    "seen_at",
    "amount",
    "network_fee",
    "network_fee_asset",
    "fiat_value",
    "fiat_currency",
    "rate",
    "rate_source",
    "rate_time",
)

# Legs and refunds as one relation: (kind order, id) breaks ties of time deterministically.
_SQL = """
SELECT * FROM (
    SELECT s.merchant_id, l.intent_id, pi.merchant_order_id, 'settlement:' || s.kind AS movement,
           s.id || '/' || l.position AS movement_id, CASE WHEN s.canonical THEN 'canonical' ELSE 'reorged' END,
           a.code AS asset, n.code AS network, ot.tx_hash, s.seen_at AS seen_at,
           l.amount_base_units, na.decimals, l.fee_base_units, fee_na.decimals, fee_a.code,
           l.fiat_value, l.fiat_currency, l.rate, l.rate_source, l.rate_time
    FROM payments_settlementleg l
    JOIN payments_settlement s ON s.id = l.settlement_id
    JOIN payments_outflowtransaction ot ON ot.id = s.transaction_id
    JOIN payments_paymentintent pi ON pi.id = l.intent_id
    LEFT JOIN payments_networkasset na ON na.id = l.network_asset_id
    LEFT JOIN payments_asset a ON a.id = na.asset_id
    JOIN payments_network n ON n.id = s.network_id
    LEFT JOIN payments_networkasset fee_na ON fee_na.id = s.fee_asset_id
    LEFT JOIN payments_asset fee_a ON fee_a.id = fee_na.asset_id
    UNION ALL
    SELECT r.merchant_id, r.intent_id, pi.merchant_order_id, 'refund', r.id, r.state,
           a.code, n.code, COALESCE(o.tx_hash, ''), COALESCE(o.block_time, o.seen_unconfirmed_at, r.created_at),
           r.amount_base_units, na.decimals, NULL, NULL, NULL,
           r.fiat_amount, r.fiat_currency, r.rate, r.rate_source, r.rate_time
    FROM payments_refund r
    JOIN payments_paymentintent pi ON pi.id = r.intent_id
    JOIN payments_networkasset na ON na.id = r.network_asset_id
    JOIN payments_asset a ON a.id = na.asset_id
    JOIN payments_network n ON n.id = na.network_id
    LEFT JOIN payments_chainobservation o ON o.id = r.observation_id
) m
WHERE {where}
ORDER BY m.seen_at, m.movement, m.movement_id
{limit}
"""


MOVEMENT_FILTER = FilterColumns(
    "m.merchant_id", "m.seen_at", "m.network", "m.asset", None, ("m.movement", "m.movement_id")
)


def movement_rows(f: RowFilter, *, limit: int | None = None, chunk: int = 2000) -> Iterator[dict]:
    """The movements of `f`'s merchants seen in its range (`created_from`/`created_to` apply to the time
    the movement was seen; `after` is (seen_at, (movement, movement_id))), streamed (`stream_rows`)."""
    where, params = where_sql(f, MOVEMENT_FILTER)
    return stream_rows(_SQL, where, params, _row, limit=limit, chunk=chunk)


def _fiat(value, currency: str) -> str | None:
    if value is None:
        return None
    places = FIAT_CURRENCIES.get(currency)
    return str(value.quantize(Decimal(1).scaleb(-places))) if places is not None else f"{value.normalize():f}"


def _row(r: tuple) -> dict:
    (
        merchant_id,
        payment_id,
        order_id,
        movement,
        movement_id,
        status,
        asset,
        network,
        tx_hash,
        seen_at,
        amount,
        decimals,
        fee,
        fee_decimals,
        fee_asset,
        fiat_value,
        fiat_currency,
        rate,
        rate_source,
        rate_time,
    ) = r
    return {
        "merchant_id": merchant_id,
        "payment_id": payment_id,
        "merchant_order_id": order_id,
        "movement": movement,
        "movement_id": movement_id,
        "status": status,
        "asset": asset,
        "network": network,
        "transaction_hash": tx_hash or None,
        "seen_at": time_text(seen_at),
        "amount": format_amount(int(amount), decimals) if decimals is not None else str(int(amount)),
        "network_fee": format_amount(int(fee), fee_decimals)
        if fee is not None and fee_decimals is not None
        else None,
        "network_fee_asset": fee_asset if fee is not None else None,
        "fiat_value": _fiat(fiat_value, fiat_currency),
        "fiat_currency": fiat_currency or None,
        "rate": f"{rate.normalize():f}" if rate is not None else None,
        "rate_source": rate_source or None,
        "rate_time": time_text(rate_time),
        "_position": (seen_at, (movement, movement_id)),
    }

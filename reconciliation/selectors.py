"""The per-order reconciliation: one row per payment tying the merchant's order to the gateway's payment,
its chain transactions, amounts (asset units and fiat), fees, settlements and refunds, with the status
`rules.reconcile` derives. One SQL statement (LATERAL sub-selects per payment, each on an index) read in
chunks from a server-side cursor: an export of any size runs in constant memory and its first rows leave
at once. The CSV, the JSON pages and the reports all read these rows, so they cannot disagree.

The column set is versioned (`COLUMN_SET`): columns are only ever added at the end under a new version;
a name never changes meaning. docs/FINANCE.md defines every column."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.db import connection, transaction

from payments.pricing import FIAT_CURRENCIES, format_amount, from_base_units

from . import rules

COLUMN_SET = "reconciliation/1"

COLUMNS = (
    "merchant_id",
    "merchant_order_id",
    "payment_id",
    "customer_id",
    "state",
    "asset",
    "network",
    "created_at",
    "first_seen_at",
    "paid_at",
    "price_amount",
    "price_currency",
    "amount_requested",
    "amount_received",
    "amount_counted",
    "amount_refunded",
    "amount_swept",
    "amount_on_address",
    "quote_rate",
    "quote_rate_source",
    "quote_rate_time",
    "fiat_value_at_quote",
    "paid_value_currency",
    "paid_rate",
    "paid_rate_source",
    "paid_rate_time",
    "fiat_value_when_paid",
    "transaction_hashes",
    "confirmations",
    "flags",
    "network_fee",
    "network_fee_asset",
    "service_fee",
    "service_fee_currency",
    "settlement_ids",
    "settled_at",
    "refund_ids",
    "refund_states",
    "refund_amounts",
    "refund_transaction_hashes",
    "fulfilled_at",
    "reconciliation_status",
    "reconciliation_reason",
)
# Cells holding several values (one per transaction, settlement or refund, in the same order across the
# refund columns): a JSON array in the API, joined by LIST_SEPARATOR in a CSV cell.
LIST_COLUMNS = frozenset(
    {
        "transaction_hashes",
        "flags",
        "settlement_ids",
        "refund_ids",
        "refund_states",
        "refund_amounts",
        "refund_transaction_hashes",
    }
)
LIST_SEPARATOR = " "

# Decimal digits for fiat arithmetic: a uint256 amount times a 40-digit rate, exact (the default 28 rounds).
EXACT = 120

_OPEN_REFUNDS = ("requested", "approved", "awaiting_payment", "detected")

# {where} is filled with fixed SQL fragments only (see `_where`); every value is a bound parameter.
_SQL = """
SELECT pi.id AS payment_id, pi.merchant_id, pi.merchant_order_id, pi.customer_id, pi.state, pi.created_at,
       pi.price_amount, pi.price_currency, pi.amount_due_base_units AS due,
       pi.amount_confirmed_base_units AS counted, pi.amount_refunded_base_units AS refunded, pi.flags,
       pi.fulfilled_at, a.code AS asset, n.code AS network, na.decimals, native.decimals AS native_decimals,
       native.code AS native_code, q.rate AS quote_rate, q.source AS quote_source, q.rate_time AS quote_time,
       tip.height AS tip, obs.first_seen_at, obs.received, obs.credited, obs.tx_hashes, obs.unconfirmed,
       obs.highest_block, obs.other_assets, deb.debited, st.ids AS settlement_ids, st.seen AS settlement_seen,
       st.fee, st.moved_unknown, st.swept, rf.ids AS refund_ids, rf.states AS refund_states,
       rf.amounts AS refund_amounts, rf.tx_hashes AS refund_txs, rf.open AS refunds_open, paid.paid_at,
       pv.currency AS paid_currency, pv.rate AS paid_rate, pv.rate_source AS paid_source,
       pv.rate_time AS paid_rate_time, fee.currency AS fee_currency, fee.percent_bps AS fee_bps,
       fee.fixed_amount AS fee_fixed, mm.detail AS mismatch
FROM payments_paymentintent pi
LEFT JOIN payments_networkasset na ON na.id = pi.network_asset_id
LEFT JOIN payments_asset a ON a.id = na.asset_id
LEFT JOIN payments_network n ON n.id = na.network_id
LEFT JOIN payments_paymentaddress pa ON pa.id = pi.address_id
-- An EVM address pays its transactions' gas in the native coin, beside their value: summed once per
-- (network, payer) and hash-joined (a sub-select per payment scanned every outflow transaction each time).
LEFT JOIN (
    SELECT t.network_id, t.fee_payer, SUM(t.fee_base_units) AS paid
    FROM payments_outflowtransaction t
    WHERE t.canonical AND t.block_height IS NOT NULL AND t.fee_payer <> ''
    GROUP BY t.network_id, t.fee_payer
) gas ON n.chain = 'evm' AND na.contract_address = '' AND gas.network_id = na.network_id
     AND gas.fee_payer = pa.address
-- No LIMIT in a per-payment sub-select: a LIMIT keeps PostgreSQL from running the joins in parallel workers
-- (the COPY of `csvcopy` is then spread over every core); the first of several is taken by DISTINCT ON or
-- by an ordered ARRAY_AGG instead.
LEFT JOIN (
    SELECT DISTINCT ON (nn.network_id) nn.network_id, nn.decimals, nac.code
    FROM payments_networkasset nn JOIN payments_asset nac ON nac.id = nn.asset_id
    WHERE nn.contract_address = '' ORDER BY nn.network_id, nn.id
) native ON native.network_id = na.network_id
LEFT JOIN payments_quote q ON q.id = pi.quote_id
LEFT JOIN payments_chaintip tip ON tip.network_id = na.network_id
LEFT JOIN LATERAL (
    SELECT MIN(COALESCE(o.seen_unconfirmed_at, o.block_time)) AS first_seen_at,
           COALESCE(SUM(o.amount_base_units) FILTER (
               WHERE o.own AND o.block_height IS NOT NULL AND NOT o.internal), 0) AS received,
           COALESCE(SUM(o.amount_base_units) FILTER (WHERE o.own AND o.block_height IS NOT NULL), 0)
               AS credited,
           ARRAY_AGG(o.tx_hash ORDER BY o.block_height NULLS LAST, o.id) FILTER (WHERE o.own) AS tx_hashes,
           BOOL_OR(o.block_height IS NULL) FILTER (WHERE o.own AND NOT o.internal) AS unconfirmed,
           MAX(o.block_height) FILTER (WHERE o.own AND NOT o.internal) AS highest_block,
           COUNT(*) FILTER (WHERE NOT o.own AND NOT o.internal AND NOT o.gas_funding) AS other_assets
    FROM (
        SELECT co.*,
               (co.network_id = na.network_id AND co.token_contract = LOWER(na.contract_address)) AS own,
               EXISTS (
                   SELECT 1 FROM payments_outflow ofl
                   JOIN payments_paymentintent owner ON owner.id = ofl.intent_id
                   WHERE ofl.network_id = co.network_id AND ofl.tx_hash = co.tx_hash
                     AND owner.merchant_id = pi.merchant_id
               ) AS internal,
               co.sender <> '' AND co.sender IN (
                   SELECT t.address FROM payments_treasuryaddress t
                   WHERE t.merchant_id = pi.merchant_id AND t.network_id = co.network_id
               ) AS gas_funding
        FROM payments_chainobservation co
        WHERE co.intent_id = pi.id AND co.canonical
        OFFSET 0  -- a fence: each flag computed once per observation, not once per aggregate using it
    ) o
) obs ON TRUE
LEFT JOIN LATERAL (
    SELECT COALESCE(SUM(ofl.amount_base_units), 0) + COALESCE(gas.paid, 0) AS debited
    FROM payments_outflow ofl
    JOIN payments_outflowtransaction ot ON ot.id = ofl.transaction_id
    WHERE ofl.intent_id = pi.id AND ot.canonical AND ot.block_height IS NOT NULL
      AND ofl.network_id = na.network_id AND ofl.token_contract = LOWER(na.contract_address)
) deb ON TRUE
LEFT JOIN LATERAL (
    SELECT ARRAY_AGG(s.id ORDER BY s.seen_at, s.id) AS ids,
           ARRAY_AGG(s.seen_at ORDER BY s.seen_at, s.id) AS seen,
           SUM(s.fee) AS fee,
           COALESCE(SUM(s.unknown), 0) AS moved_unknown,
           COALESCE(SUM(s.swept), 0) AS swept
    FROM (
        SELECT s.id, s.seen_at, SUM(l.fee_base_units) AS fee,
               SUM(l.amount_base_units) FILTER (
                   WHERE s.kind = 'unknown_outflow' AND l.network_asset_id = na.id) AS unknown,
               -- a Bitcoin-family leg's amount is the input it spent, its fee share included
               SUM(l.amount_base_units - CASE WHEN n.chain = 'evm' THEN 0 ELSE COALESCE(l.fee_base_units, 0) END)
                   FILTER (WHERE s.kind = 'sweep' AND l.network_asset_id = na.id) AS swept
        FROM payments_settlementleg l
        JOIN payments_settlement s ON s.id = l.settlement_id
        WHERE l.intent_id = pi.id AND s.canonical
        GROUP BY s.id, s.seen_at
    ) s
) st ON TRUE
LEFT JOIN LATERAL (
    SELECT ARRAY_AGG(r.id ORDER BY r.created_at, r.id) AS ids,
           ARRAY_AGG(r.state ORDER BY r.created_at, r.id) AS states,
           ARRAY_AGG(r.amount_base_units ORDER BY r.created_at, r.id) AS amounts,
           ARRAY_AGG(COALESCE(ro.tx_hash, '') ORDER BY r.created_at, r.id) AS tx_hashes,
           COUNT(*) FILTER (WHERE r.state = ANY(%(open_refunds)s)) AS open
    FROM payments_refund r
    LEFT JOIN payments_chainobservation ro ON ro.id = r.observation_id
    WHERE r.intent_id = pi.id
) rf ON TRUE
LEFT JOIN LATERAL (
    SELECT MAX(t.created_at) AS paid_at FROM payments_statetransition t
    WHERE t.intent_id = pi.id AND t.to_state IN ('paid', 'overpaid')
      AND pi.state IN ('paid', 'overpaid', 'refunded')  -- shown, and the fee's date, only when kept
) paid ON TRUE
LEFT JOIN reconciliation_paidvaluation pv ON pv.intent_id = pi.id
-- The fee schedule in force when paid (or created): each schedule runs until the merchant's next one.
LEFT JOIN (
    SELECT f.merchant_id, f.currency, f.percent_bps, f.fixed_amount, f.valid_from,
           LEAD(f.valid_from) OVER (PARTITION BY f.merchant_id ORDER BY f.valid_from) AS valid_to
    FROM reconciliation_servicefeeschedule f
) fee ON fee.merchant_id = pi.merchant_id AND fee.valid_from <= COALESCE(paid.paid_at, pi.created_at)
     AND (fee.valid_to IS NULL OR COALESCE(paid.paid_at, pi.created_at) < fee.valid_to)
-- The latest finding of re-verification not cleared since, if any.
LEFT JOIN (
    SELECT DISTINCT ON (m.intent_id) m.intent_id, m.detail FROM reconciliation_verificationmismatch m
    WHERE m.cleared_at IS NULL ORDER BY m.intent_id, m.found_at DESC, m.id DESC
) mm ON mm.intent_id = pi.id
WHERE {where}
ORDER BY pi.created_at, pi.id
{limit}
"""


@dataclass(frozen=True)
class RowFilter:
    """Which payments: those of `merchant_ids`, created in [`created_from`, `created_to`), optionally of
    one network, asset or state, after the keyset position `after` (created_at, id) and up to `until`."""

    merchant_ids: tuple[str, ...]
    created_from: datetime | None = None
    created_to: datetime | None = None
    network: str = ""
    asset: str = ""
    state: str = ""
    after: tuple[datetime, str | tuple[str, ...]] | None = None  # (time, key): a payment id, or a tuple
    until: tuple[datetime, str | tuple[str, ...]] | None = None  # up to and including this keyset position


@dataclass(frozen=True)
class FilterColumns:
    """Which SQL columns a report's `RowFilter` applies to: the merchant, the time `from`/`to` and the
    keyset start with, the network and asset codes, the state (None: the report has none), and the keyset's
    tie-breakers after the time."""

    merchant: str
    time: str
    network: str
    asset: str
    state: str | None
    key: tuple[str, ...]


def where_sql(f: RowFilter, c: FilterColumns) -> tuple[str, dict]:
    """The WHERE clause of a report (fixed fragments, every value bound) and its parameters."""
    clauses, params = [f"{c.merchant} = ANY(%(merchants)s)"], {"merchants": list(f.merchant_ids)}
    if f.created_from is not None:
        clauses.append(f"{c.time} >= %(created_from)s")
        params["created_from"] = f.created_from
    if f.created_to is not None:
        clauses.append(f"{c.time} < %(created_to)s")
        params["created_to"] = f.created_to
    if f.network:
        clauses.append(f"{c.network} = %(network)s")
        params["network"] = f.network
    if f.asset:
        clauses.append(f"{c.asset} = %(asset)s")
        params["asset"] = f.asset
    if f.state and c.state:
        clauses.append(f"{c.state} = %(state)s")
        params["state"] = f.state
    for name, position, compare in (("after", f.after, ">"), ("until", f.until, "<=")):
        if position is None:
            continue
        when, key = position
        parts = key if isinstance(key, tuple) else (key,)
        names = [f"{name}_{i}" for i in range(len(parts))]
        columns = ", ".join((c.time, *c.key))
        bound = ", ".join(f"%({n})s" for n in (f"{name}_time", *names))
        clauses.append(f"({columns}) {compare} ({bound})")
        params[f"{name}_time"] = when
        params.update(zip(names, parts, strict=True))
    return " AND ".join(clauses), params


PAYMENT_FILTER = FilterColumns("pi.merchant_id", "pi.created_at", "n.code", "a.code", "pi.state", ("pi.id",))


def _where(f: RowFilter) -> tuple[str, dict]:
    return where_sql(f, PAYMENT_FILTER)


def stream_rows(
    template: str, where: str, params: dict, row: Callable[[tuple], dict], *, limit: int | None, chunk: int
) -> Iterator[dict]:
    """Run a report's statement (`template` with its {where} and {limit}) and yield `row` of each record,
    read from a server-side cursor `chunk` rows at a time, in a transaction of its own (a savepoint in the
    caller's) that ends when the rows do or the generator is closed. In a transaction the named cursor
    streams; without one Django declares it WITH HOLD, and PostgreSQL runs the whole query and keeps its
    result before the first row comes back."""
    sql = template.format(where=where, limit="LIMIT %(limit)s" if limit is not None else "")
    if limit is not None:
        params = {**params, "limit": limit}
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.itersize = chunk
        cursor.execute(sql, params)
        while True:
            batch = cursor.fetchmany(chunk)
            if not batch:
                return
            for record in batch:
                yield row(record)


def rows_statement(f: RowFilter) -> tuple[str, dict]:
    """The rows' statement for `f` without a LIMIT (as `reconciliation_rows` runs it, and the CSV's COPY
    reads it) and its parameters."""
    where, params = _where(f)
    return _SQL.format(where=where, limit=""), {**params, "open_refunds": list(_OPEN_REFUNDS)}


def reconciliation_rows(f: RowFilter, *, limit: int | None = None, chunk: int = 2000) -> Iterator[dict]:
    """The rows in order (created_at, id), each a dict over COLUMNS (plus `_position`, the keyset of the
    row), streamed (`stream_rows`)."""
    where, params = _where(f)
    params["open_refunds"] = list(_OPEN_REFUNDS)
    return stream_rows(_SQL, where, params, _row, limit=limit, chunk=chunk)


def time_text(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _amount(value, decimals: int | None) -> str | None:
    if value is None or decimals is None:
        return None
    return format_amount(int(value), decimals)


def _fiat(amount: int, decimals: int, rate: Decimal | None, currency: str) -> str | None:
    places = FIAT_CURRENCIES.get(currency)
    if rate is None or places is None:
        return None
    with localcontext(prec=EXACT):  # exact, as PostgreSQL's numeric is in the CSV (`csvcopy`)
        value = from_base_units(amount, decimals) * rate
        return str(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _service_fee(base, currency: str, bps: int, fixed: Decimal) -> str | None:
    """`bps` of the price in the schedule's currency plus the fixed part, rounded half up to the currency's
    decimals; empty when the payment has no price in that currency (neither priced nor valued in it)."""
    if base is None:
        return None
    places = Decimal(1).scaleb(-FIAT_CURRENCIES[currency])
    with localcontext(prec=EXACT):
        fee = Decimal(base) * bps / Decimal(10_000) + fixed
        return str(fee.quantize(places, rounding=ROUND_HALF_UP))


def _unique(values: list | None) -> list[str]:
    return list(dict.fromkeys(v for v in values or [] if v))


def _row(r: tuple) -> dict:
    (
        payment_id,
        merchant_id,
        order_id,
        customer_id,
        state,
        created_at,
        price_amount,
        price_currency,
        due,
        counted,
        refunded,
        flags,
        fulfilled_at,
        asset,
        network,
        decimals,
        native_decimals,
        native_code,
        quote_rate,
        quote_source,
        quote_time,
        tip,
        first_seen_at,
        received,
        credited,
        tx_hashes,
        unconfirmed,
        highest_block,
        other_assets,
        debited,
        settlement_ids,
        settlement_seen,
        fee,
        moved_unknown,
        swept,
        refund_ids,
        refund_states,
        refund_amounts,
        refund_txs,
        refunds_open,
        paid_at,
        paid_currency,
        paid_rate,
        paid_source,
        paid_rate_time,
        fee_currency,
        fee_bps,
        fee_fixed,
        mismatch,
    ) = r
    received, counted, refunded = int(received or 0), int(counted or 0), int(refunded or 0)
    on_address = max(int(credited or 0) - int(debited or 0), 0)
    facts = rules.OrderFacts(
        state=state,
        received=received,
        counted=counted,
        refunded=refunded,
        refunds_open=int(refunds_open or 0),
        on_address=on_address,
        moved_unknown=int(moved_unknown or 0),
        other_assets=int(other_assets or 0),
        mismatch=mismatch or "",
        decimals=decimals or 0,
        unit=asset or "",
    )
    verdict = rules.reconcile(facts)
    kept = state in rules.KEPT_STATES
    at_quote = _fiat(counted, decimals, quote_rate, price_currency) if decimals is not None else None
    when_paid = _fiat(counted, decimals, paid_rate, paid_currency) if kept and decimals is not None else None
    if fee_currency is None or not kept:
        service_fee, fee_currency = "0", None
    else:
        # The price when it is in the schedule's currency; else the value when paid, if in that currency.
        base = (
            price_amount
            if fee_currency == price_currency
            else when_paid
            if fee_currency == paid_currency
            else None
        )
        service_fee = _service_fee(base, fee_currency, fee_bps, fee_fixed)
    with localcontext(prec=EXACT):  # a price in the asset itself may have 40 digits; 28 would round it
        price_text = f"{price_amount.normalize():f}" if price_amount is not None else None
        quote_text = f"{quote_rate.normalize():f}" if quote_rate is not None else None
        paid_rate_text = f"{paid_rate.normalize():f}" if kept and paid_rate is not None else None
    if unconfirmed or highest_block is None or tip is None:
        confirmations = 0
    else:
        confirmations = max(int(tip) - int(highest_block) + 1, 0)
    return {
        "merchant_id": merchant_id,
        "merchant_order_id": order_id,
        "payment_id": payment_id,
        "customer_id": customer_id,
        "state": state,
        "asset": asset,
        "network": network,
        "created_at": time_text(created_at),
        "first_seen_at": time_text(first_seen_at),
        "paid_at": time_text(paid_at) if state in rules.KEPT_STATES else None,
        "price_amount": price_text,
        "price_currency": price_currency,
        "amount_requested": _amount(due, decimals),
        "amount_received": _amount(received, decimals),
        "amount_counted": _amount(counted, decimals),
        "amount_refunded": _amount(refunded, decimals),
        "amount_swept": _amount(int(swept or 0), decimals),
        "amount_on_address": _amount(on_address, decimals),
        "quote_rate": quote_text,
        "quote_rate_source": quote_source,
        "quote_rate_time": time_text(quote_time),
        "fiat_value_at_quote": at_quote,
        "paid_value_currency": paid_currency if kept else None,
        "paid_rate": paid_rate_text,
        "paid_rate_source": (paid_source or None) if kept else None,
        "paid_rate_time": time_text(paid_rate_time) if kept else None,
        "fiat_value_when_paid": when_paid,
        "transaction_hashes": _unique(tx_hashes),
        "confirmations": str(confirmations),
        "flags": list(json.loads(flags) if isinstance(flags, str) else flags or []),
        "network_fee": _amount(fee, native_decimals),
        "network_fee_asset": native_code if fee is not None else None,
        "service_fee": service_fee,
        "service_fee_currency": fee_currency,
        "settlement_ids": list(settlement_ids or []),
        "settled_at": time_text(max(settlement_seen)) if settlement_seen else None,
        "refund_ids": list(refund_ids or []),
        "refund_states": list(refund_states or []),
        "refund_amounts": [_amount(v, decimals) for v in refund_amounts or []],
        "refund_transaction_hashes": list(refund_txs or []),
        "fulfilled_at": time_text(fulfilled_at),
        "reconciliation_status": verdict.status,
        "reconciliation_reason": verdict.reason,
        "_position": (created_at, payment_id),
    }

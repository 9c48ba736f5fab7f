"""The per-order reconciliation as CSV, written by PostgreSQL (`COPY (...) TO STDOUT WITH (FORMAT csv)`):
the statement `selectors.reconciliation_rows` reads, with every cell formatted in SQL as `selectors._row` and
`exports.csv_cells` format it in Python, and the status by `status_sql`, `rules.reconcile` in SQL. Python
only passes the bytes on in blocks, so an export of a million payments costs what the statement costs
(docs/PERFORMANCE.md), in constant memory, and its first rows leave at once.

Two implementations of one rule stay one rule by their tests: a property test runs `status_sql` and
`rules.reconcile` on the same random facts, and the CSV of every fixture is compared cell by cell with the
JSON rows (tests/reconciliation/test_csvcopy.py).

Differences from the Python writer, none in a cell's value: lines end in LF (PostgreSQL's), an empty
text is written `""` and a missing value as nothing; read back with any CSV reader, the cells are equal.
The formula guard (`gateway.csvexport.safe_cell`) is applied to the cells that carry text from outside the
gateway (order and customer ids, rate sources, codes, a re-verification's finding); the others are the
gateway's own ids, hashes, states, times and non-negative numbers, which never begin with `=`, `+`, `-`,
`@`, a tab, a carriage return or an apostrophe."""

from __future__ import annotations

import csv
import io
import logging
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

from gateway.csvexport import BLOCK, ESCAPED_STARTS
from payments.pricing import FIAT_CURRENCIES

from . import rules
from .selectors import COLUMNS, RowFilter, _where, rows_statement

logger = logging.getLogger(__name__)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _among(values) -> str:
    return "(" + ", ".join(_literal(v) for v in sorted(values)) + ")"


def guard(x: str) -> str:
    """`safe_cell` in SQL: an apostrophe before a text that begins like a formula (or with an apostrophe)."""
    starts = ", ".join(str(ord(c)) for c in ESCAPED_STARTS)
    return f"(CASE WHEN ascii({x}) IN ({starts}) THEN '''' || {x} ELSE {x} END)"


def status_sql(c: Mapping[str, str]) -> tuple[str, str]:
    """`rules.reconcile` as two SQL expressions (status, reason) over the SQL expressions `c` gives for the
    fields of `rules.OrderFacts` (`factor`: the numeric 10^-decimals, 1 for none; `unit`: the asset's code,
    '' for none). Each branch is the rule's, in the rule's order."""

    def says(amount: str) -> str:
        return f"rtrim(({amount} * {c['factor']})::text || ' ' || {c['unit']})"

    kept = f"(CASE WHEN {c['state']} IN {_among(rules.KEPT_STATES)} THEN {c['counted']} ELSE 0 END)"
    unaccounted = f"({c['received']} - {kept} - {c['refunded']})"
    address = _literal(" still on the payment's address")
    branches = (
        (f"{c['mismatch']} <> ''", rules.CHAIN_MISMATCH, c["mismatch"]),
        (
            f"{c['moved_unknown']} > 0",
            rules.UNATTRIBUTED_FUNDS,
            f"{says(c['moved_unknown'])} || ' moved to an address nobody declared'",
        ),
        (f"{c['refunds_open']} > 0", rules.REFUND_PENDING, f"{c['refunds_open']}::text || ' refund(s) open'"),
        (
            f"{c['state']} IN {_among(rules.OPEN_STATES)}",
            rules.AWAITING_SETTLEMENT,
            f"'the payment is still open (' || {c['state']} || ')'",
        ),
        (
            f"{unaccounted} > 0",
            rules.UNATTRIBUTED_FUNDS,
            f"{says(unaccounted)} || ' received but neither counted to the order nor refunded'",
        ),
        (
            f"{c['other_assets']} > 0",
            rules.UNATTRIBUTED_FUNDS,
            f"{c['other_assets']}::text || {_literal(' transfer(s) of another asset to the payment' + chr(39) + 's address')}",
        ),
        (
            f"{c['on_address']} <= 0",
            rules.RECONCILED,
            f"CASE WHEN {c['received']} = 0 THEN 'nothing received' ELSE 'received and moved on' END",
        ),
        (
            f"{c['on_address']} >= {c['received']}",
            rules.AWAITING_SETTLEMENT,
            f"{says(c['on_address'])} || {address}",
        ),
        (
            "TRUE",
            rules.PARTIALLY_SETTLED,
            f"{says(c['on_address'])} || ' of ' || {says(c['received'])} || {address}",
        ),
    )
    status = " ".join(f"WHEN {when} THEN {_literal(name)}" for when, name, _ in branches)
    reason = " ".join(f"WHEN {when} THEN {text}" for when, _, text in branches)
    return f"(CASE {status} END)", f"(CASE {reason} END)"


# --- the cells --------------------------------------------------------------------------------------------

_ISO = 'YYYY-MM-DD"T"HH24:MI:SS'


def _time(x: str) -> str:
    """`selectors.time_text`: ISO 8601 in UTC with a Z, microseconds only when there are any."""
    return (
        f"to_char({x} AT TIME ZONE 'UTC', CASE WHEN date_trunc('second', {x}) = {x} "
        f"THEN '{_ISO}\"Z\"' ELSE '{_ISO}.US\"Z\"' END)"
    )


def _places(currency: str) -> str:
    cases = " ".join(f"WHEN {_literal(code)} THEN {places}" for code, places in FIAT_CURRENCIES.items())
    return f"(CASE {currency} {cases} END)"


def _fiat(amount: str, factor: str, rate: str, currency: str) -> str:
    """`selectors._fiat`: the amount in asset units times the rate, rounded half up (away from zero: the
    values are never negative) to the currency's places; nothing for an unknown currency."""
    return f"round({amount} * {factor} * {rate}, {_places(currency)})"


def _join(array: str) -> str:
    return f"array_to_string({array}, ' ')"


FACTOR = "('1e-' || r.decimals)::numeric"  # 10^-decimals with exactly `decimals` places; NULL for none
NATIVE_FACTOR = "('1e-' || r.native_decimals)::numeric"
KEPT = f"r.state IN {_among(rules.KEPT_STATES)}"
ON_ADDRESS = "GREATEST(COALESCE(r.credited, 0) - COALESCE(r.debited, 0), 0)"
WHEN_PAID = _fiat("COALESCE(r.counted, 0)", FACTOR, "r.paid_rate", "r.paid_currency")

STATUS, REASON = status_sql(
    {
        "state": "r.state",
        "received": "COALESCE(r.received, 0)",
        "counted": "COALESCE(r.counted, 0)",
        "refunded": "COALESCE(r.refunded, 0)",
        "refunds_open": "COALESCE(r.refunds_open, 0)",
        "on_address": ON_ADDRESS,
        "moved_unknown": "COALESCE(r.moved_unknown, 0)",
        "other_assets": "COALESCE(r.other_assets, 0)",
        "mismatch": guard("COALESCE(r.mismatch, '')"),
        "factor": "COALESCE(" + FACTOR + ", 1)",
        "unit": "COALESCE(r.asset, '')",
    }
)


def _amount(x: str) -> str:
    return f"({x} * {FACTOR})::text"


_UNIQUE_HASHES = (
    "CASE WHEN cardinality(r.tx_hashes) <= 1 THEN NULLIF(r.tx_hashes[1], '') ELSE "
    "(SELECT string_agg(h, ' ' ORDER BY i) FROM (SELECT h, MIN(i) AS i FROM unnest(r.tx_hashes) "
    "WITH ORDINALITY AS u(h, i) WHERE h <> '' GROUP BY h) d) END"
)

CELLS = {
    "merchant_id": "r.merchant_id",
    "merchant_order_id": guard("r.merchant_order_id"),
    "payment_id": "r.payment_id",
    "customer_id": guard("r.customer_id"),
    "state": "r.state",
    "asset": guard("r.asset"),
    "network": guard("r.network"),
    "created_at": _time("r.created_at"),
    "first_seen_at": _time("r.first_seen_at"),
    "paid_at": f"CASE WHEN {KEPT} THEN {_time('r.paid_at')} END",
    "price_amount": "trim_scale(r.price_amount)::text",
    "price_currency": guard("r.price_currency"),
    "amount_requested": _amount("r.due"),
    "amount_received": _amount("COALESCE(r.received, 0)"),
    "amount_counted": _amount("COALESCE(r.counted, 0)"),
    "amount_refunded": _amount("COALESCE(r.refunded, 0)"),
    "amount_swept": _amount("COALESCE(r.swept, 0)"),
    "amount_on_address": _amount(ON_ADDRESS),
    "quote_rate": "trim_scale(r.quote_rate)::text",
    "quote_rate_source": guard("r.quote_source"),
    "quote_rate_time": _time("r.quote_time"),
    "fiat_value_at_quote": _fiat("COALESCE(r.counted, 0)", FACTOR, "r.quote_rate", "r.price_currency")
    + "::text",
    "paid_value_currency": f"CASE WHEN {KEPT} THEN {guard('r.paid_currency')} END",
    "paid_rate": f"CASE WHEN {KEPT} THEN trim_scale(r.paid_rate)::text END",
    "paid_rate_source": f"CASE WHEN {KEPT} THEN NULLIF({guard('r.paid_source')}, '') END",
    "paid_rate_time": f"CASE WHEN {KEPT} THEN {_time('r.paid_rate_time')} END",
    "fiat_value_when_paid": f"CASE WHEN {KEPT} THEN {WHEN_PAID}::text END",
    "transaction_hashes": _UNIQUE_HASHES,
    "confirmations": (
        "CASE WHEN COALESCE(r.unconfirmed, FALSE) OR r.highest_block IS NULL OR r.tip IS NULL THEN '0' "
        "ELSE GREATEST(r.tip - r.highest_block + 1, 0)::text END"
    ),
    "flags": (
        "(SELECT string_agg(f, ' ' ORDER BY i) FROM jsonb_array_elements_text(r.flags) WITH ORDINALITY AS x(f, i))"
    ),
    "network_fee": f"(r.fee * {NATIVE_FACTOR})::text",
    "network_fee_asset": f"CASE WHEN r.fee IS NOT NULL THEN {guard('r.native_code')} END",
    "service_fee": (
        f"CASE WHEN r.fee_currency IS NULL OR NOT ({KEPT}) THEN '0' ELSE round((CASE "
        f"WHEN r.fee_currency = r.price_currency THEN r.price_amount "
        f"WHEN r.fee_currency = r.paid_currency THEN {WHEN_PAID} END) * r.fee_bps * 0.0001 + r.fee_fixed, "
        f"{_places('r.fee_currency')})::text END"
    ),
    "service_fee_currency": f"CASE WHEN {KEPT} THEN {guard('r.fee_currency')} END",
    "settlement_ids": _join("r.settlement_ids"),
    "settled_at": _time("r.settlement_seen[cardinality(r.settlement_seen)]"),
    "refund_ids": _join("r.refund_ids"),
    "refund_states": _join("r.refund_states"),
    "refund_amounts": (
        f"CASE WHEN r.refund_amounts IS NOT NULL THEN array_to_string(ARRAY(SELECT COALESCE((x * {FACTOR})::text, '') "
        "FROM unnest(r.refund_amounts) WITH ORDINALITY AS u(x, i) ORDER BY i), ' ') END"
    ),
    "refund_transaction_hashes": _join("r.refund_txs"),
    "fulfilled_at": _time("r.fulfilled_at"),
    "reconciliation_status": STATUS,
    "reconciliation_reason": REASON,
}
assert tuple(CELLS) == COLUMNS, "a cell for every column, in the columns' order"

_COPY = (
    "COPY (SELECT {cells} FROM ({core}) r ORDER BY r.created_at, r.payment_id) TO STDOUT WITH (FORMAT csv)"
)


def copy_statement(f: RowFilter) -> tuple[str, dict]:
    """The COPY statement for the payments `f` selects and its parameters (bound client-side by psycopg)."""
    core, params = rows_statement(f)
    cells = ",\n       ".join(f"{sql} AS {name}" for name, sql in CELLS.items())
    return _COPY.format(cells=cells, core=core), params


def header_line(columns: tuple[str, ...] = COLUMNS) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(columns)
    return buffer.getvalue().encode()


def _blocks(copy) -> Iterator[bytes]:
    """PostgreSQL's COPY data (a message per row) in blocks of about BLOCK bytes."""
    block = bytearray()
    for data in copy:
        block += data
        if len(block) >= BLOCK:
            yield bytes(block)
            block.clear()
    if block:
        yield bytes(block)


_SLICE_SQL = """
SELECT pi.created_at, pi.id FROM payments_paymentintent pi
LEFT JOIN payments_networkasset na ON na.id = pi.network_asset_id
LEFT JOIN payments_asset a ON a.id = na.asset_id
LEFT JOIN payments_network n ON n.id = na.network_id
WHERE {where}
"""


def _slices(cursor, f: RowFilter, parts: int, min_rows: int) -> list[RowFilter]:
    """`f` cut into `parts` slices of about as many rows each, by keyset positions (created_at, id); `f`
    alone when it selects fewer than `min_rows` payments."""
    where, params = _where(f)
    base = _SLICE_SQL.format(where=where)
    cursor.execute(f"SELECT count(*) FROM ({base}) s", params)
    total = cursor.fetchone()[0]
    if parts < 2 or total < max(min_rows, parts):
        return [f]
    bounds = []
    for i in range(1, parts):
        cursor.execute(
            f"{base} ORDER BY pi.created_at, pi.id OFFSET %(offset)s LIMIT 1",
            {**params, "offset": total * i // parts - 1},
        )
        bounds.append(tuple(cursor.fetchone()))
    starts, ends = [f.after, *bounds], [*bounds, f.until]
    return [replace(f, after=a, until=u) for a, u in zip(starts, ends, strict=True)]


# Each slice is one backend: no JIT (compiling this statement costs seconds and saves none), and no parallel
# workers of its own (the slices are the parallelism; more processes than cores only contend).
_SLICE_SETTINGS = ("SET LOCAL jit = off", "SET LOCAL max_parallel_workers_per_gather = 0")
# A slice waits at most this long for a lock (one queued behind a migration's, say, which itself waits for
# the exporting transaction): it gives up, and the exporting connection writes that slice itself.
_SLICE_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"


class _Stopped(Exception):
    pass


class _Slice(threading.Thread):
    """One slice of an export written by a connection of its own, in the snapshot the exporting
    transaction exported (`pg_export_snapshot`, as pg_dump's parallel jobs do), into a temporary file that
    is read back once the slices before it have been sent. A slice that fails (no connection to be had, a
    lock not granted in time, a full disk) is written by the exporting connection instead, in the same
    snapshot: the file is never silently short."""

    def __init__(self, f: RowFilter, snapshot: str):
        super().__init__(name="reconciliation-csv-slice", daemon=True)
        self.f, self.snapshot = f, snapshot
        self.file = tempfile.TemporaryFile(prefix="reconciliation-csv-", dir=settings.GATEWAY_TMP_DIR)
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.pg = None

    def run(self) -> None:
        wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            wrapper.ensure_connection()
            self.pg = wrapper.connection
            sql, params = copy_statement(self.f)
            with self.pg.cursor() as cursor:
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute(f"SET TRANSACTION SNAPSHOT {_literal(self.snapshot)}")
                for setting in (*_SLICE_SETTINGS, _SLICE_LOCK_TIMEOUT):
                    cursor.execute(setting)
                with cursor.copy(sql, params) as copy:
                    for data in copy:
                        if self.stopping.is_set():  # also after a cancel that came before the COPY began
                            raise _Stopped
                        self.file.write(data)
                cursor.execute("COMMIT")
        except BaseException as error:  # the reader writes the slice itself
            self.error = error
        finally:
            wrapper.close()

    def spooled(self) -> Iterator[bytes] | None:
        """The slice's blocks once it is written; None if it failed."""
        self.join()
        if self.error is not None:
            logger.warning("export slice failed (%r); the exporting connection writes it", self.error)
            return None
        self.file.seek(0)
        return iter(lambda: self.file.read(BLOCK), b"")

    def close(self) -> None:
        """Stop the slice if it still runs (the download was abandoned) and drop its file."""
        self.stopping.set()
        try:
            if self.is_alive() and self.pg is not None:
                self.pg.cancel_safe()
        finally:
            self.join()
            self.file.close()


def reconciliation_csv(
    f: RowFilter, *, parts: int | None = None, min_rows: int | None = None
) -> Iterator[bytes]:
    """The CSV of the payments `f` selects: the header at once, then PostgreSQL's output in blocks of about
    BLOCK bytes, read in a transaction of its own (a savepoint in the caller's) that ends when the rows do
    or the generator is closed (psycopg then cancels the COPY).

    An export of `min_rows` (GATEWAY_EXPORT_PARALLEL_MIN_ROWS) payments or more, asked for outside a
    transaction, is cut into `parts` (GATEWAY_EXPORT_PARALLEL) slices written at once by as many
    backends, all in one snapshot (REPEATABLE READ, exported to the others): the first is streamed as it
    comes, the others wait in temporary files until their turn. The file is the same as from one COPY."""
    yield header_line()
    parts = settings.GATEWAY_EXPORT_PARALLEL if parts is None else parts
    min_rows = settings.GATEWAY_EXPORT_PARALLEL_MIN_ROWS if min_rows is None else min_rows
    # A snapshot can be shared only from a transaction this export begins (not a caller's savepoint).
    own = not connection.in_atomic_block
    shared = parts > 1 and own
    with transaction.atomic(), connection.cursor() as cursor:
        if shared:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if own:  # in its own transaction the setting ends with it (in a caller's it would outlive it)
            cursor.execute("SET LOCAL jit = off")
        slices = _slices(cursor, f, parts, min_rows) if shared else [f]
        helpers: list[_Slice] = []
        try:
            if len(slices) > 1:
                for setting in _SLICE_SETTINGS:
                    cursor.execute(setting)
                cursor.execute("SELECT pg_export_snapshot()")
                snapshot = cursor.fetchone()[0]
                for part in slices[1:]:
                    helpers.append(_Slice(part, snapshot))
                    helpers[-1].start()
            yield from _copy(cursor, slices[0])
            for helper in helpers:
                blocks = helper.spooled()
                yield from blocks if blocks is not None else _copy(cursor, helper.f)
        finally:
            for helper in helpers:
                try:
                    helper.close()
                except Exception:
                    logger.exception("could not stop an export slice")


def _copy(cursor, f: RowFilter) -> Iterator[bytes]:
    sql, params = copy_statement(f)
    with cursor.cursor.copy(sql, params) as copy:
        yield from _blocks(copy)

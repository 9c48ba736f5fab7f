"""The CSV PostgreSQL writes (`reconciliation.csvcopy`) against the Python it stands in for: the status and
reason `status_sql` computes equal `rules.reconcile` on the same random facts (hypothesis, run in the
database), the formula guard in SQL equals `safe_cell` on random text, and an abandoned download cancels
its COPY and leaves the connection usable. Cell-for-cell equality of whole rows is checked by every flow
that reads rows through `tests.ledger.reconciled`."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.csvexport import safe_cell
from reconciliation import csvcopy, rules
from reconciliation.csvcopy import guard, header_line, reconciliation_csv, status_sql
from reconciliation.selectors import COLUMNS, RowFilter
from tests.factories import make_merchant
from tests.ledger import ltc_intent, reconciled

pytestmark = pytest.mark.django_db

FIELDS = (
    ("state", "text"),
    ("received", "numeric"),
    ("counted", "numeric"),
    ("refunded", "numeric"),
    ("refunds_open", "bigint"),
    ("on_address", "numeric"),
    ("moved_unknown", "numeric"),
    ("other_assets", "bigint"),
    ("mismatch", "text"),
    ("decimals", "integer"),
    ("unit", "text"),
)
STATUS, REASON = status_sql(
    {name: f"f.{name}" for name, _ in FIELDS} | {"factor": "('1e-' || f.decimals)::numeric"}
)
FACTS_SQL = (
    f"SELECT {STATUS}, {REASON} FROM (VALUES ("
    + ", ".join(f"%s::{kind}" for _, kind in FIELDS)
    + ")) AS f("
    + ", ".join(name for name, _ in FIELDS)
    + ")"
)

# 0 and equal amounts reach the boundaries (nothing left, all left); 10**70 is a token's uint256 range.
amounts = st.one_of(st.just(0), st.integers(1, 1000), st.integers(0, 10**70), st.sampled_from([10**18, 5]))
# What PostgreSQL's text holds: no NUL, no lone surrogate.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
settle = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settle
@given(
    state=st.sampled_from(
        sorted(rules.KEPT_STATES | rules.OPEN_STATES | {"underpaid", "expired", "canceled", "failed"})
    ),
    received=amounts,
    counted=amounts,
    refunded=amounts,
    refunds_open=st.integers(0, 3),
    on_address=amounts,
    moved_unknown=st.one_of(st.just(0), amounts),
    other_assets=st.integers(0, 2),
    mismatch=st.one_of(st.just(""), texts),
    decimals=st.sampled_from([0, 2, 6, 8, 18]),
    unit=st.sampled_from(["", "LTC", "USDC"]),
)
def test_the_status_in_sql_is_the_rule(**facts):
    with connection.cursor() as cursor:
        cursor.execute(FACTS_SQL, [facts[name] for name, _ in FIELDS])
        status, reason = cursor.fetchone()
    expected = rules.reconcile(rules.OrderFacts(**facts))
    assert (status, reason) == (expected.status, expected.reason)


@settle
@given(text=st.one_of(texts, st.sampled_from(["", "=1+1", "-2", "+3", "@A1", "\tx", "\rx", "'x", "x="])))
def test_the_formula_guard_in_sql_is_safe_cell(text):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {guard('t.x')} FROM (VALUES (%s::text)) AS t(x)", [text])
        assert cursor.fetchone()[0] == safe_cell(text)


def test_the_header_names_the_columns_and_an_abandoned_download_cancels_its_copy():
    merchant = make_merchant()
    for n in range(3):
        ltc_intent(merchant, merchant_order_id=f"order-{n}")
    assert header_line() == (",".join(COLUMNS) + "\n").encode()
    with transaction.atomic():
        body = reconciliation_csv(RowFilter(merchant_ids=(merchant.pk,)))
        assert next(body) == header_line()
        first = next(body)
        assert first.count(b"\n") == 3 and b"order-0" in first
        body.close()  # the client went away: psycopg cancels the COPY, the savepoint rolls back
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)


def payments_and_one_copy(count: int) -> tuple:
    """A merchant with `count` payments committed, their filter, and their CSV as one COPY writes it."""
    merchant = make_merchant()
    for n in range(count):
        ltc_intent(merchant, merchant_order_id=f"order-{n}")
    f = RowFilter(merchant_ids=(merchant.pk,))
    return merchant, f, b"".join(reconciliation_csv(f, parts=1))


def slice_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reconciliation-csv-slice"]


def in_own_connection(work, *args, **kwargs):
    try:
        work(*args, **kwargs)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_large_export_is_written_in_slices_of_one_snapshot_and_equals_one_copy(monkeypatch):
    """Outside a transaction (as a view runs it), an export over `min_rows` is cut into slices written
    at once by separate backends in one exported snapshot; the file is byte for byte the single COPY's,
    the Python rows' cell for cell, and a payment created while it is written is in neither."""
    merchant, f, one = payments_and_one_copy(7)
    started = []
    monkeypatch.setattr(
        csvcopy._Slice, "start", lambda self: started.append(self.f) or threading.Thread.start(self)
    )
    body = reconciliation_csv(f, parts=3, min_rows=5)
    head = next(body) + next(body)  # the header, then the first slice's rows: the slices are running
    late = threading.Thread(
        target=in_own_connection, args=(ltc_intent, merchant), kwargs={"merchant_order_id": "late"}
    )
    late.start()  # committed now, after the snapshot, by another connection (this one holds the export's)
    late.join()
    sliced = head + b"".join(body)
    assert sliced == one and sliced.count(b"\n") == 8 and b"late" not in sliced
    assert len(started) == 2 and started[-1].until is None and started[0].after is not None
    assert [r.split(b",")[2] for r in sliced.splitlines()[1:]] == [
        row["payment_id"].encode()
        for row in reconciled(merchant).values()
        if row["merchant_order_id"] != "late"
    ]
    assert not slice_threads()  # every slice's thread has ended


@pytest.mark.django_db(transaction=True)
def test_an_abandoned_sliced_export_stops_its_slices():
    merchant = make_merchant()
    for n in range(6):
        ltc_intent(merchant, merchant_order_id=f"order-{n}")
    body = reconciliation_csv(RowFilter(merchant_ids=(merchant.pk,)), parts=2, min_rows=2)
    next(body), next(body)
    body.close()
    assert not slice_threads()
    # a closed connection's backend leaves pg_stat_activity a moment after the client has gone (seen
    # taking longer than that here on a loaded machine): wait for it, boundedly
    deadline = time.monotonic() + 10
    while copies_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert copies_running() == 0


def copies_running() -> int:
    """Other backends whose (current or last) statement is an export slice's COPY."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND query LIKE 'COPY (SELECT r.merchant_id%%'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_slice_that_fails_is_written_by_the_exporting_connection(monkeypatch):
    """A slice's own connection fails (here: a setting the server refuses; in life no connection to be had,
    a lock not granted in time, a full disk): the file is still whole, the same as one COPY."""
    _, f, one = payments_and_one_copy(6)
    failed = []
    monkeypatch.setattr(csvcopy, "_SLICE_LOCK_TIMEOUT", "SET LOCAL lock_timeout = 'never'")
    real = csvcopy._Slice.spooled

    def spooled(self):
        self.join()  # the slice's outcome is known only once its thread has ended
        failed.append(self.error)
        return real(self)

    monkeypatch.setattr(csvcopy._Slice, "spooled", spooled)
    assert b"".join(reconciliation_csv(f, parts=3, min_rows=2)) == one
    assert len(failed) == 2 and all(error is not None for error in failed)
    assert not slice_threads()


def test_a_price_in_the_asset_with_more_digits_than_a_decimal_context_holds_is_exact():
    merchant = make_merchant()
    intent = ltc_intent(merchant, amount="100000000000000000000.00000001", customer_id="=cmd")
    row = reconciled(merchant)[intent.pk]  # the CSV PostgreSQL writes equals these rows, cell for cell
    assert row["price_amount"] == "100000000000000000000.00000001" and row["customer_id"] == "=cmd"

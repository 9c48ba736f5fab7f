"""The reconciliation in the merchant API: JSON pages and the streamed CSV give the same rows (the CSV
parsed back with Python's csv module), spreadsheet formulas are made inert, scopes and tenancy hold, and
bad parameters are 400s with stable codes."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from gateway.csvexport import cell_original, safe_cell
from payments import services
from payments.chains.base import Destination
from payments.models import PaymentIntent
from reconciliation.movements import MOVEMENT_COLUMNS
from reconciliation.selectors import COLUMN_SET, COLUMNS, LIST_COLUMNS
from tests.factories import make_api_key, make_merchant
from tests.ledger import NETWORK, STRANGER, ltc_intent, paid, spent

pytestmark = pytest.mark.django_db

JSON, CSV = "/api/v1/reports/reconciliation.json", "/api/v1/reports/reconciliation.csv"


def client(merchant, scopes=("reports:read",)) -> APIClient:
    _, secret = make_api_key(merchant, scopes=scopes)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return api


def pages(api, url: str, column_set: str = COLUMN_SET) -> list[dict]:
    rows = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["column_set"] == column_set and response["Gateway-Column-Set"] == column_set
        rows += body["data"]
        url = body["next"]
    return rows


def as_csv_cells(row: dict) -> list[str]:
    """What the CSV should hold for a JSON row: lists joined by a space, null empty, formulas inert."""
    return [safe_cell(" ".join(row[c]) if c in LIST_COLUMNS else row[c]) for c in COLUMNS]


@pytest.fixture
def shop():
    merchant = make_merchant()
    orders = ['=HYPERLINK("http://evil","x")', "+1", "-2", "@SUM(A1)", "\tinvoice", "'quoted", "plain"]
    intents = [ltc_intent(merchant, merchant_order_id=order) for order in orders]
    paid(intents[0], "a1" * 32)
    services.chain_tip_record(network_code=NETWORK, height=20, block_hash="b20", now=timezone.now())
    spent(intents[0], [Destination(0, STRANGER, 49_999_000)], tx_hash="b1" * 32, spent_tx_hash="a1" * 32)
    return merchant, intents


def test_the_json_pages_and_the_csv_hold_the_same_rows(shop):
    merchant, intents = shop
    api = client(merchant)
    rows = pages(api, f"{JSON}?limit=3")
    assert [r["payment_id"] for r in rows] == [i.pk for i in intents]
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["reconciliation_status"] == "unattributed_funds" and rows[0]["settlement_ids"]

    response = api.get(CSV)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Gateway-Column-Set"] == COLUMN_SET
    assert response["Content-Disposition"] == 'attachment; filename="reconciliation-v1-all-all.csv"'
    parsed = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert parsed[0] == list(COLUMNS)
    assert parsed[1:] == [as_csv_cells(row) for row in rows]


def test_cells_a_spreadsheet_would_run_are_inert(shop):
    merchant, _ = shop
    body = b"".join(client(merchant).get(CSV).streaming_content).decode()
    orders = [row[1] for row in csv.reader(io.StringIO(body))][1:]
    # Independent of the code's own list: OWASP's CSV-injection starts, each behind an apostrophe.
    assert orders == [
        '\'=HYPERLINK("http://evil","x")',
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tinvoice",
        "''quoted",
        "plain",
    ]


def test_filters_apply_to_both_and_a_day_range_is_half_open(shop):
    merchant, intents = shop
    api = client(merchant)
    today = timezone.now().date()
    tomorrow = today.fromordinal(today.toordinal() + 1)
    assert len(pages(api, f"{JSON}?from={today}&to={tomorrow}")) == len(intents)
    assert pages(api, f"{JSON}?from={tomorrow}") == []
    assert [r["payment_id"] for r in pages(api, f"{JSON}?state=paid&network={NETWORK}&asset=LTC")] == [
        intents[0].pk
    ]
    response = api.get(f"{CSV}?from={tomorrow}")
    assert b"".join(response.streaming_content).decode().splitlines() == [",".join(COLUMNS)]
    assert f"reconciliation-v1-{tomorrow:%Y%m%d}T000000Z-all.csv" in response["Content-Disposition"]


def test_a_key_without_reports_read_gets_403_and_a_merchant_sees_only_its_own(shop):
    merchant, _ = shop
    other = make_merchant("Another shop", account=1)
    ltc_intent(other)
    for url in (JSON, CSV):
        response = client(merchant, scopes=("payments:read", "refunds:read")).get(url)
        assert response.status_code == 403 and response.json()["error"]["code"] == "missing_scope"
    assert len(pages(client(other), JSON)) == 1


@pytest.mark.parametrize(
    "query,code,param",
    [
        ("from=yesterday", "invalid_parameter", "from"),
        ("from=2026-11-02T10:00:00", "invalid_parameter", "from"),  # a time without its offset is ambiguous
        ("from=2026-11-02&to=2026-11-01", "invalid_range", "to"),
        ("state=sleeping", "invalid_choice", "state"),
        ("merchant=m_other", "unknown_parameter", "merchant"),
        ("cursor=not-a-cursor", "invalid_cursor", "cursor"),
        ("limit=0", "invalid_parameter", "limit"),
        ("limit=1001", "invalid_parameter", "limit"),
        ("from=2026-02-30", "invalid_parameter", "from"),  # well-formed, impossible
        ("to=2026-13-01", "invalid_parameter", "to"),
        ("from=0001-01-01T00:00:00%2B01:00", "invalid_parameter", "from"),  # would overflow in UTC
        ("to=9999-12-31T23:00:00-05:00", "invalid_parameter", "to"),
        # a cursor naming a payment id with a NUL byte, well-formed base64 JSON otherwise
        ("cursor=WyIyMDI2LTExLTAxVDAwOjAwOjAwKzAwOjAwIiwgInBpX1x1MDAwMCJd", "invalid_cursor", "cursor"),
    ],
)
def test_bad_parameters_are_400_with_a_stable_code(shop, query, code, param):
    merchant, _ = shop
    response = client(merchant).get(f"{JSON}?{query}")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error.get("param")) == (code, param)


def test_the_totals_equal_the_sums_of_the_exported_file(shop):
    """Sum the CSV's columns with the csv module and Decimal (not the code's own summing), per day, asset and
    network: the same figures as the totals report."""
    merchant, intents = shop
    other_day = ltc_intent(merchant)
    PaymentIntent.objects.filter(pk=other_day.pk).update(created_at=timezone.now() - timedelta(days=3))
    api = client(merchant)
    body = b"".join(api.get(CSV).streaming_content).decode()
    sums: dict[tuple, dict[str, Decimal]] = {}
    for record in csv.DictReader(io.StringIO(body)):
        key = (record["merchant_id"], record["created_at"][:10], record["asset"], record["network"])
        group = sums.setdefault(key, {"payments": Decimal(0)})
        group["payments"] += 1
        for column in (
            "amount_received",
            "amount_counted",
            "amount_refunded",
            "amount_swept",
            "amount_on_address",
        ):
            group[column] = group.get(column, Decimal(0)) + Decimal(cell_original(record[column]) or "0")
    response = api.get(f"/api/v1/reports/totals?from={(timezone.now() - timedelta(days=5)).date()}")
    assert response.status_code == 200, response.json()
    report = {
        (g["merchant_id"], g["day"], g["asset"], g["network"]): {
            "payments": Decimal(g["payments"]),
            **{c: Decimal(g[c]) for c in sums[next(iter(sums))] if c != "payments"},
        }
        for g in response.json()["data"]
    }
    assert report == sums and len(report) == 2
    default = api.get("/api/v1/reports/totals").json()
    assert default["from"].startswith(timezone.now().strftime("%Y-%m-01"))  # this month by default
    today = api.get("/api/v1/reports/totals?preset=today&group=range").json()["data"]
    assert [g["payments"] for g in today] == [len(intents)]
    assert today[0]["statuses"]["unattributed_funds"] == 1


@pytest.mark.parametrize(
    "query,code,param",
    [
        ("preset=yesterday", "invalid_choice", "preset"),
        ("preset=today&from=2026-11-01", "invalid_range", "preset"),
        ("group=week", "invalid_choice", "group"),
        ("from=2020-01-01", "range_too_long", "from"),  # summed in the request: at most 366 days
        ("to=2026-01-01", "range_too_long", "from"),
    ],
)
def test_bad_totals_parameters_are_400(shop, query, code, param):
    merchant, _ = shop
    response = client(merchant).get(f"/api/v1/reports/totals?{query}")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error.get("param")) == (code, param)


def test_the_movements_list_each_settlement_leg_and_refund(shop):
    merchant, intents = shop
    services.refund_create(
        intent_id=intents[0].pk,
        amount_kind="custom",
        value="0.1",
        reason="one item came back",
        requested_by="test",
        approved=True,
        destination=STRANGER,
        now=timezone.now(),
    )
    api = client(merchant)
    rows = pages(api, "/api/v1/reports/movements.json?limit=1", "movements/1")
    assert [(r["movement"], r["payment_id"]) for r in rows] == [
        ("settlement:unknown_outflow", intents[0].pk),
        ("refund", intents[0].pk),
    ]
    leg, refund = rows
    assert (leg["amount"], leg["network_fee"], leg["network_fee_asset"]) == (
        "0.50000000",
        "0.00001000",
        "LTC",
    )
    assert (leg["status"], leg["transaction_hash"]) == ("canonical", "b1" * 32)
    assert (refund["amount"], refund["status"], refund["transaction_hash"]) == (
        "0.10000000",
        "awaiting_payment",
        None,
    )
    assert refund["merchant_order_id"] == '=HYPERLINK("http://evil","x")'
    response = api.get("/api/v1/reports/movements.csv")
    assert response["Gateway-Column-Set"] == "movements/1"
    assert "movements-v1-all-all.csv" in response["Content-Disposition"]
    parsed = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert parsed[0] == list(MOVEMENT_COLUMNS)
    assert parsed[1:] == [[safe_cell(r[c]) for c in MOVEMENT_COLUMNS] for r in rows]
    assert (
        client(make_merchant("Another shop", account=1)).get("/api/v1/reports/movements.json").json()["data"]
        == []
    )
    bad = api.get("/api/v1/reports/movements.json?cursor=WyIyMDI2LTExLTAxVDAwOjAwOjAwKzAwOjAwIl0")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"

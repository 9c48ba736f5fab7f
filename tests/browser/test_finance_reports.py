"""Finance in a real browser, each person holding only their role (made with `role_grant`): a finance user
finds the reports from the admin's index, picks a range, sees the totals and downloads the reconciliation
as CSV (parsed back with Python's csv module: the same rows as the reports API, only their merchant's); a
support agent gets 403 for the page and the download. Screenshots go to the artifacts' finance/ folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from payments import services
from reconciliation.api import json_row
from reconciliation.exports import csv_cells
from reconciliation.selectors import COLUMNS, RowFilter, reconciliation_rows
from support.roles import role_grant
from tests.browser.test_console_flows import login
from tests.factories import make_merchant
from tests.ledger import NETWORK, ltc_intent, paid

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shots(artifacts) -> Path:
    path = artifacts.parent / "finance"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def world():
    own, other = make_merchant("Own shop", account=0), make_merchant("Other shop", account=1)
    paid_one = ltc_intent(own, merchant_order_id="=cmd|' /C calc'!A0")  # a formula an attacker chose
    paid(paid_one, "a1" * 32)
    services.chain_tip_record(network_code=NETWORK, height=20, block_hash="b20", now=timezone.now())
    waiting = ltc_intent(own, merchant_order_id="order-2")
    theirs = ltc_intent(other)
    for username, role in (("finance", "finance"), ("agent", "support_agent")):
        user = User.objects.create_user(username, password="a long enough password 123")
        role_grant(user=user, role=role, merchant_ids=[own.pk], actor="test")
    return {"own": own, "ids": [paid_one.pk, waiting.pk], "theirs": theirs}


def test_finance_downloads_the_reconciliation_and_an_agent_gets_403(
    world, live_server, page, shots, tmp_path
):
    login(page, live_server, "finance")
    page.get_by_role("link", name="Finance reports").first.click()
    page.wait_for_selector("#report-filters")
    page.select_option("select[name=preset]", "today")
    page.click("#report-filters input[type=submit]")
    page.wait_for_selector("#report-totals")
    assert page.locator("#report-totals td.payments").inner_text() == "2"
    assert world["theirs"].pk not in page.content()
    page.screenshot(path=shots / "reports.png", full_page=True)

    with page.expect_download() as info:
        page.click("#report-download")
    download = info.value
    assert download.suggested_filename.startswith("reconciliation-v1-")
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    with target.open(newline="", encoding="utf-8") as f:
        parsed = list(csv.reader(f))
    assert parsed[0] == list(COLUMNS)
    expected = [
        csv_cells(json_row(row)) for row in reconciliation_rows(RowFilter(merchant_ids=(world["own"].pk,)))
    ]
    from gateway.csvexport import safe_cell

    assert parsed[1:] == [[safe_cell(c) for c in row] for row in expected]
    assert [r[2] for r in parsed[1:]] == world["ids"]
    assert parsed[1][1] == "'=cmd|' /C calc'!A0"  # inert in a spreadsheet

    login(page, live_server, "agent")
    for path in ("/admin/reconciliation/report/", "/admin/reconciliation/report/export.csv?preset=today"):
        response = page.request.get(f"{live_server.url}{path}")
        assert response.status == 403, path
    page.goto(f"{live_server.url}/admin/")
    assert page.get_by_role("link", name="Finance reports").count() == 0

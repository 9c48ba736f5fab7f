"""The finance reports in the admin, as real staff made with `grant_role`: every role x {the page, the
download} x {own merchant, another merchant}. Expected outcomes written from the role definitions
(docs/SUPPORT.md "Roles"): finance and the auditor see the reports, only finance downloads, and nobody
sees another merchant's payments. The download is streamed, holds the same rows as the API and is
audited; fee schedules are changed by the operator only, audited."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from reconciliation.models import ServiceFeeSchedule
from support.models import AuditEntry
from tests.factories import make_merchant
from tests.ledger import ltc_intent

pytestmark = pytest.mark.django_db

ROLES = ("support_agent", "support_lead", "finance", "merchant_admin", "auditor")
PAGE, DOWNLOAD = "/admin/reconciliation/report/", "/admin/reconciliation/report/export.csv"
SEES = {"finance", "auditor"}
DOWNLOADS = {"finance"}


@pytest.fixture
def shops():
    own, other = make_merchant("Own shop", account=0), make_merchant("Other shop", account=1)
    return {"own": (own, ltc_intent(own, merchant_order_id="own-1")), "other": (other, ltc_intent(other))}


def staff(role: str, own, monkeypatch) -> Client:
    monkeypatch.setenv("GATEWAY_STAFF_PASSWORD", "a long enough password 123")
    call_command("grant_role", f"{role}-user", role, "--merchant", own.pk, "--create")
    client = Client()
    client.force_login(User.objects.get(username=f"{role}-user"))
    return client


def downloaded(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize("role", ROLES)
def test_who_sees_and_downloads_the_reports(role, shops, monkeypatch):
    own, own_intent = shops["own"]
    other, other_intent = shops["other"]
    client = staff(role, own, monkeypatch)

    page = client.get(PAGE)
    assert page.status_code == (200 if role in SEES else 403), role
    if role in SEES:
        html = page.content.decode()
        assert own_intent.pk in html and other_intent.pk not in html
        assert ('id="report-download"' in html) == (role in DOWNLOADS)
        # naming the other merchant is refused by the form: nothing of theirs is shown
        refused = client.get(PAGE, {"merchant": other.pk}).content.decode()
        assert "errorlist" in refused and other_intent.pk not in refused

    download = client.get(DOWNLOAD, {"preset": "today"})
    assert download.status_code == (200 if role in DOWNLOADS else 403), role
    if role in DOWNLOADS:
        assert download.streaming and download["Content-Type"] == "text/csv; charset=utf-8"
        rows = downloaded(download)
        assert [r["payment_id"] for r in rows] == [own_intent.pk]
        assert rows[0]["merchant_order_id"] == "own-1"
        entry = AuditEntry.objects.get(action="report.export")
        assert (entry.actor, entry.merchant_id) == (f"{role}-user", own.pk)
        assert entry.after["merchants"] == [own.pk]
        assert client.get(DOWNLOAD, {"merchant": other.pk}).status_code == 400
    else:
        assert not AuditEntry.objects.filter(action="report.export").exists()


def test_the_page_totals_follow_the_filters(shops, monkeypatch):
    own, _ = shops["own"]
    ltc_intent(own)
    client = staff("finance", own, monkeypatch)
    html = client.get(PAGE, {"preset": "today"}).content.decode()
    assert '<td class="payments">2</td>' in html
    tomorrow = (timezone.now() + timezone.timedelta(days=1)).date().isoformat()
    html = client.get(PAGE, {"date_from": tomorrow}).content.decode()
    assert "No payments in this range." in html
    assert "errorlist" in client.get(PAGE, {"preset": "today", "date_from": tomorrow}).content.decode()


def test_fee_schedules_are_the_operators_and_audited(shops, monkeypatch, admin_client):
    own, _ = shops["own"]
    finance = staff("finance", own, monkeypatch)
    url = "/admin/reconciliation/servicefeeschedule/"
    assert finance.get(url).status_code == 200  # finance reads them
    assert finance.get(url + "add/").status_code == 403
    response = admin_client.post(
        url + "add/",
        {
            "merchant": own.pk,
            "valid_from_0": "2026-01-01",
            "valid_from_1": "00:00:00",
            "currency": "USD",
            "percent_bps": "150",
            "fixed_amount": "0.30",
            "note": "contract 2026",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule = ServiceFeeSchedule.objects.get(merchant=own)
    entry = AuditEntry.objects.get(action="config.add", object_type="reconciliation.servicefeeschedule")
    assert entry.object_id == str(schedule.pk) and entry.after["percent_bps"] == 150


@pytest.mark.parametrize("role", ROLES)
def test_who_sees_the_closes_and_the_verification(role, shops, monkeypatch):
    own, _ = shops["own"]
    client = staff(role, own, monkeypatch)
    for path, allowed in (
        ("/admin/reconciliation/dailyclose/", SEES),
        ("/admin/reconciliation/verificationmismatch/", SEES),
        ("/admin/reconciliation/verificationrun/", {"auditor"}),
        ("/admin/reconciliation/paidvaluation/", SEES),
    ):
        assert client.get(path).status_code == (200 if role in allowed else 403), (role, path)


def test_the_page_and_the_list_show_the_closes_in_the_assets_units(shops, monkeypatch):
    from datetime import date

    from payments.models import NetworkAsset
    from reconciliation.models import DailyClose

    own, _ = shops["own"]
    ltc = NetworkAsset.objects.get(asset__code="LTC", network__code="litecoin-regtest")
    today = timezone.now().date()
    DailyClose.objects.create(
        merchant=own,
        network_asset=ltc,
        day=today,
        opening=0,
        received=75_000_000,
        swept=24_980_000,
        refunded=0,
        other_out=0,
        fees=20_000,
        closing=50_000_000,
        check_height=120,
        evidence_balance=50_000_000,
        chain_balance=0,
        difference=-50_000_000,
        status="difference",
        computed_at=timezone.now(),
    )
    DailyClose.objects.create(
        merchant=shops["other"][0],
        network_asset=ltc,
        day=date(2026, 1, 1),
        opening=0,
        received=1,
        swept=0,
        refunded=0,
        other_out=0,
        fees=0,
        closing=1,
        status="balanced",
        computed_at=timezone.now(),
    )
    client = staff("finance", own, monkeypatch)
    html = client.get(PAGE, {"preset": "today"}).content.decode()
    assert '<td class="closing">0.50000000</td>' in html and "the chain&#x27;s balance differs" in html
    listed = client.get("/admin/reconciliation/dailyclose/").content.decode()
    assert "0.50000000" in listed and "0.00020000" in listed and ">50000000<" not in listed
    assert listed.count('class="field-opening_units"') == 1  # the other merchant's close is not listed

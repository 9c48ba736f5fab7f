"""The console in a real browser, as a support agent holding only a case worker's permissions and the
payments' view permission for one merchant: the index shows the queues, a queue's link opens its list,
the date-range filter narrows it, and a note is added to a case from its page. Screenshots are saved
as artifacts (console/)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from payments.models import PaymentIntent
from support.models import CaseNote, SupportCase
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shots(artifacts) -> Path:
    path = artifacts.parent / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_an_agent_finds_a_queue_filters_it_by_date_and_notes_a_case(live_server, page, shots):
    now = timezone.now()
    own, other = make_merchant("Own shop", account=0), make_merchant("Other shop", account=1)
    old, recent = new_intent(own), new_intent(own)
    PaymentIntent.objects.filter(pk=old.pk).update(state="underpaid", expires_at=now - timedelta(hours=3))
    PaymentIntent.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=3))
    PaymentIntent.objects.filter(pk=recent.pk).update(state="underpaid", expires_at=now - timedelta(hours=1))
    theirs = new_intent(other)
    PaymentIntent.objects.filter(pk=theirs.pk).update(state="underpaid", expires_at=now - timedelta(hours=9))
    case = SupportCase.objects.create(
        kind="underpaid_expired",
        merchant=own,
        intent=old,
        dedupe_key="k",
        opened_at=now - timedelta(hours=3),
        due_by=now + timedelta(hours=21),
    )
    make_staff(
        "view_paymentintent",
        "view_webhookendpoint",
        "view_webhookdelivery",
        "view_supportcase",
        "change_supportcase",
        merchants=[own],
        username="agent",
    )

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "agent")
    page.fill("#id_password", "x")
    page.click("input[type=submit]")
    panel = page.locator("#support-queues")
    panel.wait_for()
    row = panel.locator("tr.queue-underpaid_closed")
    assert row.locator(".queue-count").inner_text() == "2"  # the other shop's is not counted
    assert row.locator(".queue-age").inner_text() == "3 h 0 min"
    page.screenshot(path=shots / "index.png", full_page=True)
    links = panel.locator("tbody th a")
    queues = [(links.nth(n).inner_text(), links.nth(n).get_attribute("href")) for n in range(links.count())]
    assert len(queues) == 17 + 3 + 1  # every queue; cases by status (3) and by assignee (unassigned)
    for n, (label, href) in enumerate(queues):
        answer = page.goto(f"{live_server.url}{href}")
        assert answer.status == 200 and "e=1" not in page.url, label
        page.screenshot(path=shots / f"queue-{n:02d}.png", full_page=True)
    page.goto(f"{live_server.url}/admin/")

    row.locator("a").click()
    page.wait_for_url("**/paymentintent/?underpaid=closed")
    assert page.locator("#result_list tbody tr").count() == 2
    today = now.date()
    page.fill("input[name=created_at__from]", (today - timedelta(days=1)).isoformat())
    page.fill("input[name=created_at__to]", today.isoformat())
    page.locator("form.date-range-filter input[type=submit]").first.click()
    page.wait_for_url("**created_at__from=*")
    assert "underpaid=closed" in page.url  # the queue's filter is kept
    assert page.locator("#result_list tbody tr").count() == 1
    assert recent.pk in page.locator("#result_list").inner_text()
    page.screenshot(path=shots / "queue-underpaid-closed.png", full_page=True)

    page.goto(f"{live_server.url}/admin/support/supportcase/{case.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0
    page.fill("#case-note textarea[name=body]", "asked the customer for a top-up")
    page.click("#case-note input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    assert "note added" in page.locator(".messagelist").inner_text().lower()
    assert CaseNote.objects.get(case=case).body == "asked the customer for a top-up"
    page.screenshot(path=shots / "case.png", full_page=True)

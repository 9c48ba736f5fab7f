"""The back office's people, each with only their role (made with `grant_role`), through the real admin in
headless Chromium (issue 12, "Done means"):

- an agent finds a late payment in its queue, opens the case, adds a note and escalates it; the agent sees
  no accept button, a forged post is a 403 and another merchant's payment a 404;
- a lead accepts the late payment with a reason and the payment becomes paid, with the event at the
  merchant's webhook receiver;
- with four-eyes on (the default) the same lead cannot approve their own request and a second lead does;
- an auditor sees everything and can change nothing.

Screenshots go to the artifacts' console/ folder."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from payments import services
from payments.models import PaymentIntent
from payments.webhooks.delivery import deliver_due, events_dispatch
from payments.webhooks.endpoints import endpoint_create
from support.cases import cases_open
from support.models import ApprovalRequest, AuditEntry, MerchantPolicy, SupportCase
from support.roles import role_grant
from tests.browser.test_checkout import snapshots
from tests.factories import make_merchant
from tests.payments.test_services_settle import block, new_intent, transfer
from tests.webhooks.receiver import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_webhooks")]

LATE_TX = "0x" + "1a" * 32
REASON = "The customer paid within minutes of the deadline; the merchant agreed to honour it."


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def shots(artifacts) -> Path:
    path = artifacts.parent / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def world(receiver):
    """Two merchants; the own one's payment expired two hours ago and then received its full amount (a late
    payment: flagged, its case opened from the event stream); the merchant's receiver got every event."""
    now = timezone.now()
    own, other = make_merchant("Own shop", account=0), make_merchant("Other shop", account=1)
    endpoint_create(merchant=own, url=receiver.url, now=now)
    late = new_intent(own, now=now - timedelta(hours=2))
    services.expire_due_intents(now=now)
    services.observation_record(transfer=transfer(late, tx=LATE_TX, **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=120, block_hash="0xtip", now=now)
    theirs = new_intent(other)
    events_dispatch(now=now)
    deliver_due(now=now)
    cases_open(now=now)
    people = {}
    for username, role in (
        ("agent", "support_agent"),
        ("lead", "support_lead"),
        ("lead2", "support_lead"),
        ("auditor", "auditor"),
    ):
        user = User.objects.create_user(username, password="a long enough password 123")
        role_grant(user=user, role=role, merchant_ids=[own.pk], actor="test")
        people[username] = user
    return {"own": own, "other": other, "late": late, "theirs": theirs, "people": people}


def login(page, live_server, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "a long enough password 123")
    page.click("input[type=submit]")
    page.wait_for_selector("#support-queues")


def forged_post(page, live_server, path: str, data: dict) -> int:
    """A post the page does not offer, sent with the user's session and a valid CSRF token."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"{live_server.url}{path}",
        form={**data, "csrfmiddlewaretoken": token},
        headers={"X-CSRFToken": token, "Referer": f"{live_server.url}{path}"},
        max_redirects=0,
    )
    return response.status


def action_path(intent, name: str) -> str:
    return reverse("admin:payments_paymentintent_action", args=[intent.pk, name])


def test_an_agent_finds_the_late_payment_notes_and_escalates_its_case_and_cannot_decide(
    world, live_server, page, shots
):
    late, theirs = world["late"], world["theirs"]
    login(page, live_server, "agent")
    page.click("#support-queues a:has-text('Late payment')")
    page.wait_for_selector("#result_list")
    snapshots(page, shots, "agent-late-queue")
    page.click(f"#result_list a:has-text('{late.pk}')")
    page.wait_for_selector("#payment-actions")
    assert "Accept a late payment" not in page.inner_text("#payment-actions")
    page.click("#payment-cases a:has-text('case ')")
    page.fill("#case-note textarea", "Customer says they paid at 14:59; checking with the merchant.")
    page.click("#case-note input[type=submit]")
    page.wait_for_selector(".messagelist")
    page.fill("#case-escalate textarea", "The merchant wants it accepted: a lead's decision.")
    page.click("#case-escalate input[type=submit]")
    page.wait_for_selector(".messagelist")
    snapshots(page, shots, "agent-case-escalated")
    case = SupportCase.objects.get(intent=late, kind="late_payment")
    assert case.escalated_by.username == "agent" and case.notes.count() == 2
    assert "The merchant wants it accepted" in page.inner_text("#content")

    assert forged_post(page, live_server, action_path(late, "accept_late_payment"), {"reason": REASON}) == 403
    page.goto(f"{live_server.url}/admin/payments/paymentintent/{theirs.pk}/change/")
    assert "not found" in page.inner_text("body").lower() or page.title().startswith("Page not found")
    assert forged_post(page, live_server, action_path(theirs, "resend_checkout_link"), {"note": "x"}) == 404
    assert PaymentIntent.objects.get(pk=late.pk).state == "expired"


def test_a_lead_accepts_the_late_payment_and_the_merchant_is_told(world, live_server, page, shots, receiver):
    late = world["late"]
    MerchantPolicy.objects.create(merchant=world["own"], four_eyes="never", updated_at=timezone.now())
    login(page, live_server, "lead")
    page.goto(f"{live_server.url}/admin/payments/paymentintent/{late.pk}/change/")
    page.click("#payment-actions a:has-text('Accept a late payment')")
    assert "applies at once" in page.inner_text("#four-eyes-note")
    page.check("input[type=radio][name=observation]")
    page.fill("textarea[name=reason]", REASON)
    snapshots(page, shots, "lead-accept-late")
    page.click("input[type=submit].default")
    page.wait_for_selector(".messagelist")
    assert "the payment is now paid" in page.inner_text(".messagelist")
    snapshots(page, shots, "lead-payment-paid")
    assert PaymentIntent.objects.get(pk=late.pk).state == "paid"
    events_dispatch(now=timezone.now())
    deliver_due(now=timezone.now())
    told = [r.event for r in receiver.received if r.status == 200]
    paid = [e for e in told if e["type"] == "payment.paid" and e["data"]["id"] == late.pk]
    assert len(paid) == 1 and paid[0]["data"]["state"] == "paid"


def test_with_four_eyes_the_lead_cannot_approve_their_own_and_a_second_lead_does(
    world, live_server, page, shots
):
    late = world["late"]
    login(page, live_server, "lead")
    page.goto(f"{live_server.url}/admin/payments/paymentintent/{late.pk}/change/")
    page.click("#payment-actions a:has-text('Accept a late payment')")
    assert "Four-eyes" in page.inner_text("#four-eyes-note")
    page.check("input[type=radio][name=observation]")
    page.fill("textarea[name=reason]", REASON)
    page.click("input[type=submit].default")
    page.wait_for_selector(".messagelist")
    approval = ApprovalRequest.objects.get()
    assert PaymentIntent.objects.get(pk=late.pk).state == "expired"
    page.goto(f"{live_server.url}/admin/")
    page.click("#support-queues a:has-text('Approvals waiting')")
    page.click(f"#result_list a:has-text('{approval.pk}')")
    assert "You asked for this" in page.inner_text("#decision")
    assert page.locator("#decision input[name=approve]").count() == 0
    decide = reverse("admin:support_approvalrequest_decide", args=[approval.pk])
    assert forged_post(page, live_server, decide, {"approve": "1"}) == 403
    snapshots(page, shots, "lead-own-approval")

    login(page, live_server, "lead2")
    page.goto(f"{live_server.url}/admin/support/approvalrequest/{approval.pk}/change/")
    page.click("#decision input[name=approve]")
    page.wait_for_selector(".messagelist")
    snapshots(page, shots, "second-lead-approved")
    assert ApprovalRequest.objects.get().status == "approved"
    assert PaymentIntent.objects.get(pk=late.pk).state == "paid"
    assert AuditEntry.objects.filter(action="approval.approved", actor="lead2").count() == 1


def test_an_auditor_sees_everything_and_changes_nothing(world, live_server, page, shots):
    late = world["late"]
    login(page, live_server, "auditor")
    snapshots(page, shots, "auditor-index")
    page.goto(f"{live_server.url}/admin/payments/paymentintent/{late.pk}/change/")
    assert "No action is available to you" in page.inner_text("#payment-actions")
    assert page.locator("#content-main input[type=submit]").count() == 0
    case = SupportCase.objects.get(intent=late, kind="late_payment")
    page.goto(f"{live_server.url}/admin/support/supportcase/{case.pk}/change/")
    assert page.locator("#case-note, #case-assign, #case-status, #case-escalate").count() == 0
    page.goto(f"{live_server.url}/admin/support/auditentry/")
    assert page.locator("#audit-export").count() == 1
    snapshots(page, shots, "auditor-audit-log")
    before = AuditEntry.objects.count()
    for path, data in (
        (action_path(late, "accept_late_payment"), {"reason": REASON}),
        (action_path(late, "resend_checkout_link"), {"note": "x"}),
        (reverse("admin:support_supportcase_note", args=[case.pk]), {"body": "x"}),
    ):
        assert forged_post(page, live_server, path, data) == 403, path
    assert AuditEntry.objects.count() == before and PaymentIntent.objects.get(pk=late.pk).state == "expired"

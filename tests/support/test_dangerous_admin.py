"""Dangerous decisions from the payment page, through the test client as people with only their
permissions: a lead sees and takes them (at once, or as an approval request per the merchant's policy),
an agent sees no button and a forged post is a 403, another merchant's payment is a 404."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from payments import services
from payments.models import PaymentIntent
from support.models import ApprovalRequest, AuditEntry, MerchantPolicy
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db

REASON = "The customer's bank confirmed the transfer; receipt in ticket 981."
LEAD = ("support.decide_payment", "view_paymentintent", "view_merchant")
AGENT = ("support.change_supportcase", "view_paymentintent", "view_merchant")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def action_url(intent, name) -> str:
    from django.contrib.admin.utils import quote

    return reverse("admin:payments_paymentintent_action", args=[quote(intent.pk), name])


def page(client, intent) -> str:
    from django.contrib.admin.utils import quote

    response = client.get(reverse("admin:payments_paymentintent_change", args=[quote(intent.pk)]))
    assert response.status_code == 200
    return response.content.decode()


def one_lead_decides(merchant):
    MerchantPolicy.objects.create(merchant=merchant, four_eyes="never", updated_at=timezone.now())


def test_a_lead_marks_paid_at_once_when_the_policy_lets_one_lead_decide():
    shop = make_merchant("Shop")
    one_lead_decides(shop)
    lead = client_for(make_staff(*LEAD, username="lead"))
    intent = new_intent(shop)
    body = page(lead, intent)
    assert "Dangerous actions" in body and action_url(intent, "mark_paid") in body
    assert action_url(intent, "accept_underpayment") not in body  # not underpaid: not offered
    form = lead.get(action_url(intent, "mark_paid")).content.decode()
    assert "applies at once" in form and "10.000000 USDC" in form
    response = lead.post(action_url(intent, "mark_paid"), {"reason": "too short"})
    assert response.status_code == 400 and PaymentIntent.objects.get(pk=intent.pk).state == "awaiting_payment"
    response = lead.post(action_url(intent, "mark_paid"), {"reason": REASON})
    assert response.status_code == 302
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "paid" and intent.resolutions.get().reason == REASON
    entry = AuditEntry.objects.get(action="payment.mark_paid")
    assert (entry.actor, entry.object_id, entry.reason) == ("lead", intent.pk, REASON)
    assert "marked paid by an authorised person" in page(lead, intent)


def test_with_four_eyes_the_lead_asks_and_another_lead_approves():
    shop = make_merchant("Shop")
    maker, checker = (
        make_staff(*LEAD, username="ann"),
        make_staff(*LEAD, "support.view_approvalrequest", username="bob"),
    )
    intent = new_intent(shop)
    as_maker = client_for(maker)
    assert "Four-eyes" in as_maker.get(action_url(intent, "cancel")).content.decode()
    assert as_maker.post(action_url(intent, "cancel"), {"reason": REASON}).status_code == 302
    approval = ApprovalRequest.objects.get()
    assert (approval.action, approval.status) == ("payment.cancel", "pending")
    assert PaymentIntent.objects.get(pk=intent.pk).state == "awaiting_payment"
    client_for(checker).post(
        reverse("admin:support_approvalrequest_decide", args=[approval.pk]), {"approve": "1"}
    )
    assert PaymentIntent.objects.get(pk=intent.pk).state == "expired"


def test_a_lead_accepts_a_late_payment_by_choosing_its_transaction():
    shop = make_merchant("Shop")
    one_lead_decides(shop)
    now = timezone.now()
    intent = new_intent(shop, now=now - timedelta(hours=2))
    services.expire_due_intents(now=now)
    late = services.observation_record(transfer=transfer(intent, tx="0xlate", **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=120, block_hash="0xtip", now=now)
    lead = client_for(make_staff(*LEAD))
    form = lead.get(action_url(intent, "accept_late_payment")).content.decode()
    assert "0xlate #0: 10.000000 USDC" in form
    response = lead.post(
        action_url(intent, "accept_late_payment"), {"reason": REASON, "observation": late.pk}
    )
    assert response.status_code == 302
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"


def test_an_agent_sees_no_decision_and_cannot_post_one_and_other_merchants_are_hidden():
    shop, other = make_merchant("Shop"), make_merchant("Other", account=1)
    one_lead_decides(shop)
    intent = new_intent(shop)
    agent = client_for(make_staff(*AGENT, merchants=[shop]))
    body = page(agent, intent)
    assert "Dangerous actions" not in body and action_url(intent, "mark_paid") not in body
    assert agent.get(action_url(intent, "mark_paid")).status_code == 403
    assert agent.post(action_url(intent, "mark_paid"), {"reason": REASON}).status_code == 403
    outsider = client_for(make_staff(*LEAD, merchants=[other], username="outsider"))
    assert outsider.post(action_url(intent, "mark_paid"), {"reason": REASON}).status_code == 404
    assert PaymentIntent.objects.get(pk=intent.pk).state == "awaiting_payment"
    assert not AuditEntry.objects.exists()


def test_ids_survive_the_admins_url_quoting_and_quoted_links_open_the_payment():
    """The admin reads "_" and two hex digits in a URL as an escaped character: "pi_26..." became
    "pi&..." and the payment's page, its actions and the redirects after them were a 404."""
    from django.contrib.admin.utils import quote, unquote

    from payments.models.ids import intent_id, merchant_id

    assert all(unquote(i) == i for i in (intent_id() for _ in range(5000)))
    assert all(unquote(m) == m for m in (merchant_id() for _ in range(1000)))
    shop = make_merchant("Shop")
    one_lead_decides(shop)
    field = PaymentIntent._meta.get_field("id")
    default, field.default = field.default, lambda: "pi_26QkSpWMGIZm67JelUHN0qMe"  # an id made before
    try:
        intent = new_intent(shop)
    finally:
        field.default = default
    lead = client_for(make_staff(*LEAD))
    body = page(lead, intent)  # the test's page() quotes the id as the admin does
    assert reverse("admin:payments_paymentintent_action", args=[quote(intent.pk), "mark_paid"]) in body
    response = lead.post(
        reverse("admin:payments_paymentintent_action", args=[quote(intent.pk), "mark_paid"]),
        {"reason": REASON},
    )
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:payments_paymentintent_change", args=[quote(intent.pk)]
    )
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"

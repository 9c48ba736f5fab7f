"""Four-eyes in the admin, through the test client as people holding only their permissions: the approval
page offers the decision only to someone who may take it (never the maker), forged posts are refused,
and merchant policies change only through a request another person approves."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from payments.models import PaymentIntent
from support.approvals import dangerous_action_submit
from support.models import ApprovalRequest, MerchantPolicy
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db

REASON = "Customer paid the rest by card; ticket 4411 has the receipt."
LEAD = ("support.decide_payment", "support.view_approvalrequest", "view_paymentintent")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def shops():
    return make_merchant("Shop"), make_merchant("Other", account=1)


def ask(maker, intent) -> ApprovalRequest:
    return dangerous_action_submit(
        actor=maker,
        action="payment.mark_paid",
        merchant=intent.merchant,
        intent=intent,
        payload={},
        reason=REASON,
        now=timezone.now(),
    ).approval


def test_a_second_lead_approves_on_the_page_and_the_maker_cannot(shops):
    shop, _ = shops
    maker = make_staff(*LEAD, merchants=[shop], username="ann")
    checker = make_staff(*LEAD, merchants=[shop], username="bob")
    intent = new_intent(shop)
    approval = ask(maker, intent)
    page = reverse("admin:support_approvalrequest_change", args=[approval.pk])
    decide = reverse("admin:support_approvalrequest_decide", args=[approval.pk])

    as_maker = client_for(maker)
    body = as_maker.get(page).content.decode()
    assert "Approve and apply" not in body and "You asked for this" in body
    assert as_maker.post(decide, {"approve": "1"}).status_code == 403

    as_checker = client_for(checker)
    body = as_checker.get(page).content.decode()
    assert "Approve and apply" in body and 'name="_save"' not in body
    # what is approved, in people's units: the payment as it is now and who asked why
    assert "10.000000 USDC" in body and "awaiting_payment" in body and REASON in body
    response = as_checker.post(decide, {"approve": "1", "note": ""}, follow=True)
    assert [m.message for m in response.context["messages"]] == [
        "Approved and applied: the payment is now paid."
    ]
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "approved"
    assert "approved and applied" in as_checker.get(page).content.decode()


def test_viewers_and_other_merchants_cannot_decide(shops):
    shop, other = shops
    approval = ask(make_staff(*LEAD, merchants=[shop], username="ann"), new_intent(shop))
    page = reverse("admin:support_approvalrequest_change", args=[approval.pk])
    decide = reverse("admin:support_approvalrequest_decide", args=[approval.pk])
    viewer = client_for(make_staff("support.view_approvalrequest", merchants=[shop]))
    assert "Approve and apply" not in viewer.get(page).content.decode()
    assert viewer.post(decide, {"approve": "1"}).status_code == 403
    outsider = client_for(make_staff(*LEAD, merchants=[other], username="outsider"))
    assert outsider.get(page).status_code == 404
    assert outsider.post(decide, {"approve": "1"}).status_code == 404
    listing = outsider.get(reverse("admin:support_approvalrequest_changelist")).content.decode()
    assert approval.intent_id not in listing
    assert ApprovalRequest.objects.get().status == "pending"


def test_policy_changes_go_through_approval(shops):
    shop, other = shops
    admin_a = make_staff(
        "support.change_merchantpolicy", "support.view_merchantpolicy", merchants=[shop], username="ann"
    )
    admin_b = make_staff(
        "support.change_merchantpolicy",
        "support.view_merchantpolicy",
        "support.view_approvalrequest",
        merchants=[shop],
        username="bob",
    )
    listing = client_for(admin_a).get(reverse("admin:support_merchantpolicy_changelist")).content.decode()
    assert "Shop" in listing and "(default)" in listing and "Other" not in listing
    propose = reverse("admin:support_merchantpolicy_propose", args=[shop.pk])
    form = {
        "four_eyes": "above_amount",
        "threshold_amount": "250",
        "threshold_currency": "usd",
        "config_four_eyes": "on",
        "reason": "Small orders are decided by one lead, as agreed with the merchant.",
    }
    assert client_for(admin_a).post(propose, form).status_code == 302
    approval = ApprovalRequest.objects.get(action="merchant.policy_set")
    assert approval.payload["threshold_currency"] == "USD" and not MerchantPolicy.objects.exists()
    client_for(admin_b).post(
        reverse("admin:support_approvalrequest_decide", args=[approval.pk]), {"approve": "1"}
    )
    policy = MerchantPolicy.objects.get(merchant=shop)
    assert (policy.four_eyes, f"{policy.threshold_amount.normalize():f}", policy.threshold_currency) == (
        "above_amount",
        "250",
        "USD",
    )
    # a reason shorter than a sentence is a form error, and nothing is asked
    short = client_for(admin_a).post(propose, form | {"four_eyes": "never", "reason": "ok"})
    assert short.status_code == 400 and ApprovalRequest.objects.count() == 1
    assert (
        client_for(admin_a).get(reverse("admin:support_merchantpolicy_propose", args=[other.pk])).status_code
        == 404
    )
    viewer = client_for(make_staff("support.view_merchantpolicy", merchants=[shop]))
    assert viewer.get(propose).status_code == 403
    assert viewer.post(propose, form).status_code == 403


def test_an_expired_request_offers_no_decision(shops):
    shop, _ = shops
    approval = ask(make_staff(*LEAD, merchants=[shop], username="ann"), new_intent(shop))
    ApprovalRequest.objects.filter(pk=approval.pk).update(expires_at=timezone.now())
    body = (
        client_for(make_staff(*LEAD, merchants=[shop], username="bob"))
        .get(reverse("admin:support_approvalrequest_change", args=[approval.pk]))
        .content.decode()
    )
    assert "Approve and apply" not in body and "This request has expired" in body


def test_an_empty_decision_form_says_what_is_missing(shops):
    shop, _ = shops
    MerchantPolicy.objects.create(merchant=shop, four_eyes="never", updated_at=timezone.now())
    intent = new_intent(shop)
    lead = client_for(make_staff(*LEAD, merchants=[shop]))
    response = lead.post(reverse("admin:payments_paymentintent_action", args=[intent.pk, "mark_paid"]), {})
    assert response.status_code == 400 and "This field is required" in response.content.decode()

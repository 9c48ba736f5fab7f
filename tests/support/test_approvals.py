"""Dangerous actions and four-eyes: who may ask, who may approve (never the maker: the database refuses it
too), what the merchant's policy asks for, and what is kept when a request is rejected, expires or can no
longer apply."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from payments.errors import Conflict, InvalidRequest, NotFound
from payments.models import PaymentIntent
from support.approvals import approval_decide, approvals_expire, dangerous_action_submit
from support.audit import audit_verify
from support.dangerous import policy_payload
from support.models import ApprovalRequest, AuditEntry, MerchantPolicy
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db

REASON = "Customer paid the rest by card; ticket 4411 has the receipt."
LEAD = ("support.decide_payment", "view_paymentintent")


@pytest.fixture
def shop():
    return make_merchant("Shop")


def submit(actor, intent, action="payment.mark_paid", now=None, **payload):
    return dangerous_action_submit(
        actor=actor,
        action=action,
        merchant=intent.merchant,
        intent=intent,
        payload=payload,
        reason=REASON,
        now=now or timezone.now(),
    )


def state(intent) -> str:
    return PaymentIntent.objects.get(pk=intent.pk).state


def set_policy(merchant, **fields):
    MerchantPolicy.objects.create(merchant=merchant, updated_at=timezone.now(), **fields)


def test_by_default_a_second_lead_approves_and_the_maker_cannot(shop):
    maker, checker = make_staff(*LEAD, username="ann"), make_staff(*LEAD, username="bob")
    intent = new_intent(shop)
    submitted = submit(maker, intent)
    assert not submitted.applied and state(intent) == "awaiting_payment"
    approval = submitted.approval
    assert (approval.status, approval.maker, approval.reason) == ("pending", maker, REASON)

    with pytest.raises(PermissionDenied):
        approval_decide(actor=maker, approval_id=approval.pk, approve=True, now=timezone.now())
    decided = approval_decide(actor=checker, approval_id=approval.pk, approve=True, now=timezone.now())
    assert decided.status == "approved" and decided.checker == checker
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "paid"
    resolution = intent.resolutions.get()
    assert (resolution.kind, resolution.actor, resolution.reason) == ("mark_paid", maker, REASON)
    assert decided.result["resolutions"] == [resolution.pk] and decided.result["approved_by"] == "bob"
    assert intent.events.filter(type="payment.paid").count() == 1
    actions = list(AuditEntry.objects.order_by("sequence").values_list("action", "actor"))
    assert actions == [
        ("approval.requested", "ann"),
        ("payment.mark_paid", "ann"),
        ("approval.approved", "bob"),
    ]
    assert audit_verify().ok


def test_the_database_refuses_a_checker_who_is_the_maker(shop):
    maker = make_staff(*LEAD, username="ann")
    approval = submit(maker, new_intent(shop)).approval
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalRequest.objects.filter(pk=approval.pk).update(
            checker=maker, status="approved", decided_at=timezone.now()
        )
    with pytest.raises(IntegrityError), transaction.atomic():  # approved without a checker
        ApprovalRequest.objects.filter(pk=approval.pk).update(status="approved", decided_at=timezone.now())


@pytest.mark.parametrize(
    ("policy", "price", "currency", "four_eyes"),
    [
        ({"four_eyes": "never"}, "500", "USDC", False),
        ({"four_eyes": "always"}, "1", "USDC", True),
        (
            {"four_eyes": "above_amount", "threshold_amount": Decimal("100"), "threshold_currency": "USDC"},
            "100",
            "USDC",
            False,
        ),
        (
            {"four_eyes": "above_amount", "threshold_amount": Decimal("100"), "threshold_currency": "USDC"},
            "100.01",
            "USDC",
            True,
        ),
        # priced in another currency than the threshold's: no conversion is guessed
        (
            {"four_eyes": "above_amount", "threshold_amount": Decimal("100"), "threshold_currency": "EUR"},
            "5",
            "USDC",
            True,
        ),
    ],
)
def test_the_merchants_policy_decides_whether_two_people_are_needed(shop, policy, price, currency, four_eyes):
    set_policy(shop, **policy)
    lead = make_staff(*LEAD)
    intent = new_intent(shop, amount=price)
    submitted = submit(lead, intent)
    assert submitted.applied is (not four_eyes)
    assert state(intent) == ("awaiting_payment" if four_eyes else "paid")


def test_only_a_lead_of_the_merchant_asks_or_approves():
    shop, other = make_merchant("Shop"), make_merchant("Other", account=1)
    agent = make_staff("support.change_supportcase", "view_paymentintent", merchants=[shop])
    outsider = make_staff(*LEAD, merchants=[other], username="outsider")
    intent = new_intent(shop)
    for actor in (agent, outsider):
        with pytest.raises(PermissionDenied):
            submit(actor, intent)
    approval = submit(make_staff(*LEAD, merchants=[shop]), intent).approval
    with pytest.raises(NotFound):
        approval_decide(actor=outsider, approval_id=approval.pk, approve=True, now=timezone.now())
    with pytest.raises(PermissionDenied):
        approval_decide(actor=agent, approval_id=approval.pk, approve=True, now=timezone.now())
    assert ApprovalRequest.objects.get().status == "pending"


def test_a_request_that_no_longer_applies_fails_and_changes_nothing(shop):
    now = timezone.now()
    maker, checker = make_staff(*LEAD, username="ann"), make_staff(*LEAD, username="bob")
    intent = new_intent(shop, amount="10", now=now)
    services_confirm(intent, "0xpart", 4_000_000, now)
    assert state(intent) == "underpaid"
    approval = submit(maker, intent, action="payment.accept_underpayment").approval
    services_confirm(intent, "0xrest", 6_000_000, now, height=101)  # the customer paid the rest meanwhile
    assert state(intent) == "paid"
    decided = approval_decide(actor=checker, approval_id=approval.pk, approve=True, now=timezone.now())
    assert decided.status == "failed" and decided.result["error"] == "resolution_not_applicable"
    assert not PaymentIntent.objects.get(pk=intent.pk).resolutions.exists()
    assert AuditEntry.objects.filter(action="approval.failed").count() == 1


def test_rejection_needs_a_note_and_expiry_is_kept(shop, settings):
    maker, checker = make_staff(*LEAD, username="ann"), make_staff(*LEAD, username="bob")
    first = submit(maker, new_intent(shop)).approval
    with pytest.raises(InvalidRequest):
        approval_decide(actor=checker, approval_id=first.pk, approve=False, now=timezone.now())
    rejected = approval_decide(
        actor=checker, approval_id=first.pk, approve=False, note="no receipt attached", now=timezone.now()
    )
    assert rejected.status == "rejected" and rejected.decision_note == "no receipt attached"
    with pytest.raises(Conflict):
        approval_decide(actor=checker, approval_id=first.pk, approve=True, now=timezone.now())

    later = submit(maker, new_intent(shop)).approval
    with pytest.raises(Conflict) as raised:
        approval_decide(actor=checker, approval_id=later.pk, approve=True, now=later.expires_at)
    assert raised.value.code == "approval_expired"
    assert ApprovalRequest.objects.get(pk=later.pk).status == "expired"
    third = submit(maker, new_intent(shop)).approval
    assert approvals_expire(now=third.expires_at - timedelta(seconds=1)) == 0
    assert approvals_expire(now=third.expires_at) == 1
    assert ApprovalRequest.objects.filter(status="expired").count() == 2
    assert ApprovalRequest.objects.count() == 3


def test_the_same_request_twice_waits_once_and_a_tampered_payload_is_refused(shop):
    maker, checker = make_staff(*LEAD, username="ann"), make_staff(*LEAD, username="bob")
    intent = new_intent(shop)
    approval = submit(maker, intent).approval
    with pytest.raises(Conflict) as raised:
        submit(checker, intent)
    assert raised.value.code == "approval_already_pending"
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE support_approvalrequest SET payload = %s WHERE id = %s",
            ['{"observation_id": 1}', approval.pk],
        )
    with pytest.raises(Conflict) as raised:
        approval_decide(actor=checker, approval_id=approval.pk, approve=True, now=timezone.now())
    assert raised.value.code == "approval_tampered"


def test_changing_the_policy_is_itself_four_eyes(shop):
    admin_a = make_staff("support.change_merchantpolicy", username="ann")
    admin_b = make_staff("support.change_merchantpolicy", username="bob")
    payload = policy_payload(
        four_eyes="never", threshold_amount=None, threshold_currency="", config_four_eyes=True
    )
    submitted = dangerous_action_submit(
        actor=admin_a,
        action="merchant.policy_set",
        merchant=shop,
        payload=payload,
        reason=REASON,
        now=timezone.now(),
    )
    assert not submitted.applied and not MerchantPolicy.objects.exists()
    approval_decide(actor=admin_b, approval_id=submitted.approval.pk, approve=True, now=timezone.now())
    assert MerchantPolicy.objects.get(merchant=shop).four_eyes == "never"
    # now a lead decides alone
    intent = new_intent(shop)
    assert submit(make_staff(*LEAD), intent).applied and state(intent) == "paid"
    entry = AuditEntry.objects.get(action="merchant.policy_set")
    assert entry.before["four_eyes"] == "always" and entry.after["policy"]["four_eyes"] == "never"


def services_confirm(intent, tx, amount, now, height=100):
    from payments import services

    services.observation_record(
        transfer=transfer(intent, tx=tx, amount=amount, **block(height, now)), now=now
    )
    services.chain_tip_record(network_code="ethereum", height=height + 20, block_hash="0xtip", now=now)


def test_the_beat_expires_requests(shop, settings):
    from django.conf import settings as live

    schedule = live.CELERY_BEAT_SCHEDULE["expire-approvals"]
    assert schedule["task"] == "support.tasks.approvals_expire" and schedule["schedule"] <= 60
    from support.tasks import approvals_expire as task

    settings.GATEWAY_APPROVAL_TTL_HOURS = 0  # expires as soon as it is made
    approval = submit(make_staff(*LEAD), new_intent(shop)).approval
    assert task.apply().get() == 1
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "expired"
    assert AuditEntry.objects.filter(action="approval.expired", object_id=str(approval.pk)).count() == 1


def test_a_person_with_every_role_is_audited_without_error(shop):
    from django.contrib.auth.models import User

    from support.roles import ROLES, role_grant

    user = User.objects.create_user("many", is_staff=True)
    for role in ROLES:  # 61 characters of role names: wider than the audit's first column width (40)
        role_grant(user=user, role=role, merchant_ids=[shop.pk], actor="test")
    set_policy(shop, four_eyes="never")
    intent = new_intent(shop)
    assert submit(User.objects.get(pk=user.pk), intent).applied
    entry = AuditEntry.objects.get(action="payment.mark_paid")
    assert entry.role == ",".join(sorted(ROLES))
    assert PaymentIntent.objects.get(pk=intent.pk).resolutions.get().role == entry.role


def test_an_approval_is_not_applied_for_a_maker_who_may_no_longer_decide(shop):
    from django.contrib.auth.models import Permission

    maker, checker = make_staff(*LEAD, username="ann"), make_staff(*LEAD, username="bob")
    intent = new_intent(shop)
    approval = submit(maker, intent).approval
    maker.user_permissions.remove(Permission.objects.get(codename="decide_payment"))
    decided = approval_decide(actor=checker, approval_id=approval.pk, approve=True, now=timezone.now())
    assert decided.status == "failed" and decided.result["error"] == "maker_no_longer_permitted"
    assert state(intent) == "awaiting_payment"


@pytest.mark.parametrize("amount", ["1e30", "10000000000000000000000", "0.0000000000000000001"])
def test_a_policy_threshold_the_column_cannot_hold_is_refused_when_asked(shop, amount):
    admin_a = make_staff("support.change_merchantpolicy", username="ann")
    payload = policy_payload(
        four_eyes="above_amount",
        threshold_amount=Decimal(amount),
        threshold_currency="USD",
        config_four_eyes=True,
    )
    with pytest.raises(InvalidRequest) as raised:
        dangerous_action_submit(
            actor=admin_a,
            action="merchant.policy_set",
            merchant=shop,
            payload=payload,
            reason=REASON,
            now=timezone.now(),
        )
    assert raised.value.code == "invalid_policy" and not ApprovalRequest.objects.exists()

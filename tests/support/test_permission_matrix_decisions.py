"""The permission matrix of dangerous actions: every role x every decision, approval and policy change x
{own merchant, other merchant}, through the test client as staff made with `grant_role`. Expected from
the role definitions (docs/SUPPORT.md "Roles": decisions on payments are a support lead's; merchant
policies a support lead's or a merchant admin's), not from the migration. Allowed: the request is taken
(applied, or sent for approval); refused: 403 or 404 and nothing changed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from payments.models import PaymentIntent, Resolution
from support.approvals import dangerous_action_submit
from support.models import ApprovalRequest, AuditEntry, MerchantPolicy
from support.roles import role_grant
from tests.support.test_permission_matrix import ROLES, SIDES, shops, staff  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

REASON = "The customer's bank confirmed the transfer; receipt in ticket 981."
LEADS = {"support_lead"}
POLICY_MAKERS = {"support_lead", "merchant_admin"}


def db_state() -> list:
    return [
        list(PaymentIntent.objects.order_by("pk").values_list("pk", "state")),
        list(Resolution.objects.order_by("pk").values()),
        list(ApprovalRequest.objects.order_by("pk").values()),
        list(MerchantPolicy.objects.order_by("pk").values()),
        AuditEntry.objects.count(),
    ]


@dataclass(frozen=True)
class Decision:
    url: object  # (shop) -> url
    data: dict
    actors: set[str]


def payment_action(name: str):
    return lambda s: reverse("admin:payments_paymentintent_action", args=[s.intent.pk, name])


DECISIONS = {
    "mark paid": Decision(payment_action("mark_paid"), {"reason": REASON}, LEADS),
    "cancel": Decision(payment_action("cancel"), {"reason": REASON}, LEADS),
    "propose policy": Decision(
        lambda s: reverse("admin:support_merchantpolicy_propose", args=[s.merchant.pk]),
        {"four_eyes": "never", "threshold_amount": "", "threshold_currency": "", "reason": REASON},
        POLICY_MAKERS,
    ),
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(DECISIONS))
def test_role_decides_on_its_own_merchant_only(shops, name, role, side, monkeypatch):  # noqa: F811
    decision = DECISIONS[name]
    client = staff(role, shops["own"].merchant, monkeypatch)
    before = db_state()

    response = client.post(decision.url(shops[side]), decision.data)

    if role in decision.actors and side == "own":
        assert response.status_code == 302, response.content.decode()[-2000:]
        assert ApprovalRequest.objects.filter(status="pending").count() == 1, "sent for approval (default)"
    else:
        assert response.status_code in (403, 404), response.status_code
        assert db_state() == before, "a refused decision changes nothing"


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_role_approves_another_persons_request_on_its_own_merchant_only(shops, role, side, monkeypatch):  # noqa: F811
    maker = User.objects.create_user("maker", is_staff=True)
    role_grant(
        user=maker,
        role="support_lead",
        merchant_ids=[shops["own"].merchant.pk, shops["other"].merchant.pk],
        actor="test",
    )
    target = shops[side]
    approval = dangerous_action_submit(
        actor=User.objects.get(pk=maker.pk),
        action="payment.mark_paid",
        merchant=target.merchant,
        intent=target.intent,
        payload={},
        reason=REASON,
        now=timezone.now(),
    ).approval
    client = staff(role, shops["own"].merchant, monkeypatch)
    before = db_state()

    response = client.post(
        reverse("admin:support_approvalrequest_decide", args=[approval.pk]), {"approve": "1"}
    )

    if role in LEADS and side == "own":
        assert response.status_code == 302
        assert ApprovalRequest.objects.get(pk=approval.pk).status == "approved"
        assert PaymentIntent.objects.get(pk=target.intent.pk).state == "paid"
    else:
        assert response.status_code in (403, 404), response.status_code
        assert db_state() == before, "a refused approval changes nothing"


def paid(shop) -> None:
    """The shop's intent paid in full (10 USDC on ethereum, in a block, tip far ahead)."""
    from payments import services
    from tests.payments.test_services_settle import block, transfer

    now = timezone.now()
    services.observation_record(
        transfer=transfer(shop.intent, tx=f"0x{shop.intent.pk}", **block(100, now)), now=now
    )
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xtip", now=now)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_role_refunds_on_its_own_merchant_only(shops, role, side, monkeypatch):  # noqa: F811
    from payments.models import Refund

    for shop in shops.values():
        paid(shop)
    client = staff(role, shops["own"].merchant, monkeypatch)
    before = [*db_state(), list(Refund.objects.values())]

    response = client.post(
        payment_action("refund")(shops[side]),
        {"amount_kind": "received", "reason": REASON, "destination": ""},
    )

    if role in LEADS and side == "own":
        assert response.status_code == 302, response.content.decode()[-2000:]
        # Four-eyes by default: an approval request, no refund until another lead approves.
        assert ApprovalRequest.objects.filter(status="pending", action="payment.refund").count() == 1
        assert not Refund.objects.exists()
    else:
        assert response.status_code in (403, 404), response.status_code
        assert [*db_state(), list(Refund.objects.values())] == before, "a refused refund changes nothing"


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_role_cancels_a_refund_on_its_own_merchant_only(shops, role, side, monkeypatch):  # noqa: F811
    from payments import services
    from payments.models import Refund

    refunds = {}
    for name, shop in shops.items():
        paid(shop)
        refunds[name] = services.refund_create(
            intent_id=shop.intent.pk,
            amount_kind="custom",
            value="1",
            reason=REASON,
            requested_by="test",
            approved=True,
            now=timezone.now(),
        )
    client = staff(role, shops["own"].merchant, monkeypatch)
    before = [*db_state(), list(Refund.objects.order_by("pk").values())]

    response = client.post(
        payment_action("change_refund")(shops[side]),
        {"refund": refunds[side].pk, "cancel": "on", "reason": REASON},
    )

    if role in LEADS and side == "own":
        assert response.status_code == 302, response.content.decode()[-2000:]
        assert ApprovalRequest.objects.filter(status="pending", action="refund.change").count() == 1
        assert Refund.objects.get(pk=refunds["own"].pk).state == "approved", "nothing until approved"
    else:
        assert response.status_code in (403, 404), response.status_code
        assert [*db_state(), list(Refund.objects.order_by("pk").values())] == before


# --- Safe actions: support agents and leads, on their own merchant's payments. ---------------------------

CASE_WORKERS = {"support_agent", "support_lead"}
SAFE_ACTIONS = (
    "resend_checkout_link",
    "request_top_up",
    "decide_overpayment",
    "replay_webhooks",
    "attach_transaction",
    "attach_refund_transaction",
    "escalate_wrong_network",
)


def test_the_matrix_names_every_registered_action():
    from support.console import PAYMENT_ACTIONS

    safe = {name for name, action in PAYMENT_ACTIONS.items() if not action.dangerous}
    dangerous = {name for name, action in PAYMENT_ACTIONS.items() if action.dangerous}
    assert safe == set(SAFE_ACTIONS)
    assert dangerous == {
        "accept_late_payment",
        "accept_underpayment",
        "mark_paid",
        "cancel",
        "refund",
        "change_refund",
    }


def everything() -> list:
    from payments.models import Event
    from support.models import OverpaymentDecision, SupportCase

    return [
        *db_state(),
        Event.objects.count(),
        list(SupportCase.objects.order_by("pk").values()),
        list(OverpaymentDecision.objects.order_by("pk").values()),
    ]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", SAFE_ACTIONS)
def test_role_takes_safe_actions_on_its_own_merchant_only(shops, name, role, side, monkeypatch):  # noqa: F811
    client = staff(role, shops["own"].merchant, monkeypatch)
    url = reverse("admin:payments_paymentintent_action", args=[shops[side].intent.pk, name])
    before = everything()

    page = client.get(url)
    response = client.post(url, {"note": "Customer asked by phone; ticket 77.", "hours": "24"})

    if role in CASE_WORKERS and side == "own":
        # the action's own form or answer (its preconditions are each action's tests); never refused
        assert page.status_code == 200 and response.status_code not in (403, 404), response.status_code
    else:
        assert page.status_code in (403, 404) and response.status_code in (403, 404), response.status_code
        assert response.status_code == (404 if side == "other" else 403)
        assert everything() == before, "a refused action changes nothing"

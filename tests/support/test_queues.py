"""The console's queues: a small hand-built dataset (two merchants) whose counts and oldest ages are
worked out by hand below, scoped to the merchants a staff user is granted, counted with one query per
queue, and each queue's link listing exactly its rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from payments.models import (
    ChainObservation,
    Event,
    Merchant,
    Network,
    PaymentIntent,
    StateTransition,
    WebhookDelivery,
    WebhookEndpoint,
)
from payments.webhooks.endpoints import endpoint_create
from support.models import ApprovalRequest, SupportCase
from support.queues import QUEUES, age_text, queues_count
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db

H, M, D = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)
VIEW_ALL = (
    "view_paymentintent",
    "view_webhookendpoint",
    "view_webhookdelivery",
    "view_supportcase",
    "view_approvalrequest",
    "view_refund",
)


def refund(merchant: Merchant, intent_id: str, now, *, state: str, age: timedelta) -> str:
    from payments.models import PaymentIntent, Refund

    paid = PaymentIntent.objects.get(pk=intent_id)
    row = Refund.objects.create(
        merchant=merchant,
        intent=paid,
        network_asset=paid.network_asset,
        state=state,
        reason="returned",
        amount_kind="received",
        amount_base_units=1,
        requested_by="test",
        expires_at=now + D,
        created_at=now - age,
        updated_at=now - age,
    )
    return row.pk


def intent(merchant: Merchant, now, *, state: str, age: timedelta, **fields) -> str:
    """An intent in `state`, created `age` before now (rows written as the services would have left them;
    the state machine is not what is under test here)."""
    created = new_intent(merchant, now=now - age)
    fields.setdefault("expires_at", now + H)
    PaymentIntent.objects.filter(pk=created.pk).update(state=state, created_at=now - age, **fields)
    return created.pk


def paid_at(intent_id: str, *times) -> None:
    for n, at in enumerate(times):
        row = StateTransition.objects.create(
            intent_id=intent_id,
            from_state="confirming",
            to_state="paid",
            cause=f"test-{n}",
            reason="",
            verdict={},
        )
        StateTransition.objects.filter(pk=row.pk).update(created_at=at)


def endpoint(merchant: Merchant, now, **fields) -> WebhookEndpoint:
    made, _ = endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook", now=now)
    WebhookEndpoint.objects.filter(pk=made.pk).update(**fields)
    return made


def delivery(merchant: Merchant, hook: WebhookEndpoint, n: int, now, *, state: str, age: timedelta) -> int:
    event = Event.objects.filter(merchant=merchant).order_by("created_at", "id")[n]
    row = WebhookDelivery.objects.create(event=event, endpoint=hook, state=state, created_at=now - age)
    return row.pk


def case(
    merchant: Merchant, now, key: str, *, status: str, age: timedelta, assignee=None, kind="late_payment"
) -> int:
    row = SupportCase.objects.create(
        kind=kind,
        status=status,
        merchant=merchant,
        assignee=assignee,
        dedupe_key=key,
        opened_at=now - age,
        due_by=now - age + D,
    )
    return row.pk


def approval(merchant: Merchant, maker, now, *, age: timedelta, **decided) -> int:
    row = ApprovalRequest.objects.create(
        action="payment.mark_paid",
        merchant=merchant,
        payload={},
        payload_hash=f"{merchant.pk}-{age}",
        reason="a reason long enough to be kept",
        maker=maker,
        created_at=now - age,
        expires_at=now - age + D,
        **decided,
    )
    return row.pk


@dataclass
class Data:
    now: object
    own: Merchant
    other: Merchant
    agent: User
    rows: dict[str, set]  # queue name -> the own merchant's rows in it


@pytest.fixture
def data() -> Data:
    now = timezone.now()
    own, other = make_merchant("Own shop", account=0), make_merchant("Other shop", account=1)
    agent = make_staff("view_supportcase", "change_supportcase", merchants=[own], username="agent")
    a1 = intent(own, now, state="awaiting_payment", age=3 * H + 12 * M)
    a2 = intent(own, now, state="awaiting_payment", age=10 * M)
    c1 = intent(own, now, state="detected", age=50 * M)
    c2 = intent(own, now, state="confirming", age=2 * H)
    u1 = intent(own, now, state="underpaid", age=20 * M, expires_at=now + H)  # window open
    u2 = intent(own, now, state="underpaid", age=40 * M, expires_at=now + 2 * H, canceled_at=now - 30 * M)
    u3 = intent(own, now, state="underpaid", age=6 * H, expires_at=now - 5 * H)
    o1 = intent(own, now, state="overpaid", age=D + 2 * H, fulfilled_at=now)
    p1 = intent(own, now, state="paid", age=5 * H)
    p2 = intent(own, now, state="paid", age=8 * H, fulfilled_at=now)
    p3 = intent(own, now, state="paid", age=9 * H)
    paid_at(p1, now - 4 * H)
    paid_at(p2, now - 8 * H)
    paid_at(p3, now - 7 * H, now - H)  # paid, back to confirming on a reorg, paid again: first at -7 h
    l1 = intent(own, now, state="expired", age=9 * H + 5 * M, flags=["late_payment"])
    l2 = intent(
        own, now, state="paid", age=30 * M, flags=["duplicate_payment", "late_payment"], fulfilled_at=now
    )
    w1 = intent(own, now, state="failed", age=45 * M, flags=["wrong_network"])
    ChainObservation.objects.create(
        network=Network.objects.get(code="ethereum"),
        tx_hash="0xdropped",
        output_index=0,
        address="0xabc",
        amount_base_units=1,
        seen_unconfirmed_at=now,
        canonical=False,
        intent_id=c1,
    )
    e1 = endpoint(own, now, failing_since=now - 2 * H)
    e2 = endpoint(
        own, now, enabled=False, disabled_reason="failing", disabled_at=now - H, failing_since=now - 26 * H
    )
    endpoint(own, now, enabled=False, disabled_reason="merchant", disabled_at=now - 3 * H)
    endpoint(own, now, enabled=False, disabled_reason="gone", disabled_at=now - 9 * H, deleted_at=now)
    f1 = delivery(own, e1, 0, now, state="failed", age=3 * H)
    f2 = delivery(own, e1, 1, now, state="failed", age=H)
    delivery(own, e1, 2, now, state="delivered", age=4 * H)
    k1 = case(own, now, "k1", status="open", age=5 * H)
    k2 = case(own, now, "k2", status="in_progress", age=2 * H, assignee=agent)
    k3 = case(own, now, "k3", status="waiting_on_customer", age=H, assignee=agent)
    case(own, now, "k4", status="resolved", age=10 * H, assignee=agent)
    k5 = case(own, now, "k5", status="in_progress", age=4 * H, assignee=agent, kind="unknown_outflow")
    case(own, now, "k6", status="resolved", age=11 * H, kind="unknown_outflow")
    k7 = case(own, now, "k7", status="open", age=3 * H, kind="chain_mismatch")
    k8 = case(own, now, "k8", status="in_progress", age=H, kind="close_difference")
    r1 = refund(own, p1, now, state="approved", age=6 * H)
    r2 = refund(own, p1, now, state="awaiting_payment", age=2 * H)
    r3 = refund(own, p3, now, state="failed", age=8 * H)
    refund(own, p3, now, state="confirmed", age=9 * H)
    checker = make_staff(username="checker")
    ap1 = approval(own, agent, now, age=2 * H)
    approval(own, agent, now, age=3 * H, status="approved", checker=checker, decided_at=now)
    # The other merchant: one older item in most queues, never counted for staff of the own merchant.
    intent(other, now, state="awaiting_payment", age=30 * H)
    intent(other, now, state="expired", age=40 * H, flags=["late_payment"])
    other_paid = intent(other, now, state="paid", age=50 * H)
    refund(other, other_paid, now, state="awaiting_payment", age=30 * H)
    x1 = endpoint(other, now, failing_since=now - 20 * H)
    delivery(other, x1, 0, now, state="failed", age=20 * H)
    case(other, now, "x1", status="open", age=20 * H)
    approval(other, agent, now, age=20 * H)
    rows = {
        "approvals_waiting": {ap1},
        "awaiting_payment": {a1, a2},
        "in_flight": {c1, c2},
        "underpaid_open": {u1},
        "underpaid_closed": {u2, u3},
        "overpaid": {o1},
        "late_payment": {l1, l2},
        "duplicate_payment": {l2},
        "wrong_network": {w1},
        "wrong_asset": set(),
        "replaced_or_dropped": {c1},
        "paid_not_fulfilled": {p1, p3},
        "endpoints_failing": {e1.pk},
        "endpoints_disabled": {e2.pk},
        "deliveries_failed": {f1, f2},
        "refunds_open": {r1, r2},
        "refunds_failed": {r3},
        "unknown_outflows": {k5},
        "chain_mismatches": {k7},
        "close_differences": {k8},
        "cases_status:open": {k1, k7},
        "cases_status:in_progress": {k2, k5, k8},
        "cases_status:waiting_on_customer": {k3},
        "cases_assignee:none": {k1, k7, k8},
        f"cases_assignee:{agent.pk}": {k2, k3, k5},
    }
    return Data(now=now, own=own, other=other, agent=agent, rows=rows)


def test_age_is_written_for_people():
    assert age_text(3 * H + 12 * M + timedelta(seconds=59)) == "3 h 12 min"
    assert age_text(D + 2 * H + 7 * M) == "1 d 2 h"
    assert age_text(12 * M) == "12 min"
    assert age_text(timedelta(seconds=30)) == "< 1 min"
    assert age_text(2 * H) == "2 h 0 min"


def test_each_queue_counts_the_granted_merchants_items_with_the_oldest_age(data):
    viewer = make_staff(*VIEW_ALL, merchants=[data.own])
    counted = {row.name: (row.count, row.age) for row in queues_count(viewer, data.now)}
    assert counted == {
        "awaiting_payment": (2, "3 h 12 min"),
        "in_flight": (2, "2 h 0 min"),
        "underpaid_open": (1, "20 min"),
        "underpaid_closed": (2, "5 h 0 min"),  # u3's deadline, 5 h ago (u2's cancellation: 30 min)
        "overpaid": (1, "1 d 2 h"),
        "late_payment": (2, "9 h 5 min"),
        "duplicate_payment": (1, "30 min"),
        "wrong_network": (1, "45 min"),
        "wrong_asset": (0, ""),
        "replaced_or_dropped": (1, "50 min"),
        "paid_not_fulfilled": (2, "7 h 0 min"),  # p3 first paid 7 h ago
        "endpoints_failing": (1, "2 h 0 min"),
        "endpoints_disabled": (1, "1 h 0 min"),
        "deliveries_failed": (2, "3 h 0 min"),
        "refunds_open": (2, "6 h 0 min"),
        "refunds_failed": (1, "8 h 0 min"),
        "unknown_outflows": (1, "4 h 0 min"),
        "chain_mismatches": (1, "3 h 0 min"),
        "close_differences": (1, "1 h 0 min"),
        "cases_status:open": (2, "5 h 0 min"),
        "cases_status:in_progress": (3, "4 h 0 min"),
        "cases_status:waiting_on_customer": (1, "1 h 0 min"),
        "cases_assignee:none": (3, "5 h 0 min"),
        f"cases_assignee:{data.agent.pk}": (3, "4 h 0 min"),
        "approvals_waiting": (1, "2 h 0 min"),
    }


def test_a_superuser_counts_every_merchant(data):
    root = User.objects.create_superuser("root", password="x")
    counted = {row.name: (row.count, row.age) for row in queues_count(root, data.now)}
    assert counted["awaiting_payment"] == (3, "1 d 6 h")
    assert counted["late_payment"] == (3, "1 d 16 h")
    assert counted["paid_not_fulfilled"] == (3, "7 h 0 min")  # the other's has no paid transition: no age
    assert counted["endpoints_failing"] == (2, "20 h 0 min")
    assert counted["deliveries_failed"] == (3, "20 h 0 min")
    assert counted["cases_status:open"] == (3, "20 h 0 min")  # k1, k7 and the other's x1
    assert counted["cases_assignee:none"] == (4, "20 h 0 min")  # k1, k7, k8 and x1
    assert counted["approvals_waiting"] == (2, "20 h 0 min")


def test_a_merchant_not_granted_counts_nothing(data):
    stranger = make_staff(*VIEW_ALL, merchants=[])
    counted = queues_count(stranger, data.now)
    assert counted and all(row.count == 0 and row.age == "" for row in counted)


def test_queues_of_a_model_the_user_cannot_view_are_not_shown(data):
    cases_only = make_staff("view_supportcase", merchants=[data.own])
    assert {row.name.split(":")[0] for row in queues_count(cases_only, data.now)} == {
        "unknown_outflows",
        "chain_mismatches",
        "close_differences",
        "cases_status",
        "cases_assignee",
    }
    assert queues_count(make_staff(merchants=[data.own]), data.now) == []


def test_counting_costs_one_query_per_queue(data, django_assert_max_num_queries):
    viewer = make_staff(*VIEW_ALL, merchants=[data.own])
    # one per queue; and, whatever the number of queues: two for the user's permissions (own and roles'),
    # two for the user's merchants (guardian looks the permission up, then the merchants)
    with django_assert_max_num_queries(len(QUEUES) + 4):
        rows = queues_count(viewer, data.now)
    assert len(rows) == len(QUEUES) + 3  # cases by status: three rows (not one); by assignee: two


def test_each_queue_link_lists_exactly_its_rows(data):
    viewer = make_staff(*VIEW_ALL, merchants=[data.own])
    client = Client()
    client.force_login(viewer)
    for row in queues_count(viewer, data.now):
        page = client.get(row.url)
        assert page.status_code == 200, (row.name, row.url)  # the admin answers 302 ?e=1 to a bad filter
        listed = {obj.pk for obj in page.context["cl"].result_list}
        assert listed == data.rows[row.name], (row.name, row.url)
        assert row.count == len(listed), row.name


def test_the_index_shows_the_console(data):
    client = Client()
    client.force_login(make_staff(*VIEW_ALL, merchants=[data.own]))
    page = client.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="support-queues"' in html
    assert "Underpaid, window closed" in html and "5 h 0 min" in html
    assert "/admin/payments/paymentintent/?underpaid=closed" in html
    assert "Open cases: agent" in html
    assert "Approvals waiting" in html and "/admin/support/approvalrequest/?status__exact=pending" in html
    assert 'id="support-queues"' not in client.get("/admin/payments/").content.decode()  # the site index only
    client.force_login(make_staff(merchants=[data.own]))
    assert 'id="support-queues"' not in client.get("/admin/").content.decode()


def test_a_top_up_keeps_an_underpaid_window_open_in_the_queues_and_the_sweep():
    """The queues and the case sweep read the deadline as evaluate() does: a top-up's extension counts."""
    from payments import services
    from support.cases import cases_sweep
    from tests.payments.test_services_settle import block, transfer

    now = timezone.now()
    shop = make_merchant("Shop")
    intent_ = new_intent(shop, amount="10", now=now - H)  # window closed 45 min ago
    services.observation_record(
        transfer=transfer(intent_, tx="0xpart", amount=4_000_000, **block(100, now - H)), now=now - H
    )
    services.chain_tip_record(network_code="ethereum", height=130, block_hash="0xtip", now=now)
    assert PaymentIntent.objects.get(pk=intent_.pk).state == "underpaid"
    viewer = make_staff(*VIEW_ALL, merchants=[shop])

    def windows(at):
        counted = {row.name: row.count for row in queues_count(viewer, at)}
        return counted["underpaid_open"], counted["underpaid_closed"]

    assert windows(now) == (0, 1)
    services.resolution_record(
        intent_id=intent_.pk,
        kind="extend_deadline",
        actor=viewer,
        role="support_agent",
        reason="The customer will send the remaining six USDC today.",
        now=now,
        until=now + 2 * H,
    )
    assert windows(now) == (1, 0)
    cases_sweep(now=now)
    assert not SupportCase.objects.filter(kind="underpaid_expired").exists()
    assert windows(now + 3 * H) == (0, 1)
    cases_sweep(now=now + 3 * H)
    assert SupportCase.objects.filter(kind="underpaid_expired", intent=intent_).count() == 1

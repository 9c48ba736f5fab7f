"""Safe actions on a payment, through the console's dispatcher as a support agent holding only the role:
each takes a note, writes an audit entry naming the payment, the actor and the note, and emits the event
the merchant acts on; an auditor's POST is a 403 and another merchant's payment a 404. Expected amounts
are worked out by hand from the transfers the tests make (USDC has 6 decimals)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from payments import services
from payments.models import Event, PaymentIntent, Resolution, WebhookDelivery
from payments.selectors import intent_representation
from payments.webhooks.endpoints import endpoint_create
from support.models import AuditEntry, CaseNote, OverpaymentDecision, SupportCase
from support.roles import role_grant
from tests.factories import make_merchant
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db

NOTE = "The customer asked on the phone for this, ticket 4711."
POLYGON_USDC = "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359"


@pytest.fixture
def shop():
    return make_merchant("Shop A", account=0)


@pytest.fixture
def other_shop():
    return make_merchant("Shop B", account=1)


def person(role: str, *merchants, username: str) -> Client:
    from django.contrib.auth.models import User

    user = User.objects.create_user(username=username, password="x")
    role_grant(user=user, role=role, merchant_ids=[m.pk for m in merchants], actor="test")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def agent(shop):
    return person("support_agent", shop, username="agnes")


@pytest.fixture
def auditor(shop):
    return person("auditor", shop, username="otto")


def url(intent: PaymentIntent, name: str) -> str:
    return reverse("admin:payments_paymentintent_action", args=[quote(intent.pk), name])


def page_of(intent: PaymentIntent) -> str:
    return reverse("admin:payments_paymentintent_change", args=[quote(intent.pk)])


def audited(intent: PaymentIntent, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(object_type="payment_intent", object_id=intent.pk, action=action))


def assert_audited(intent: PaymentIntent, action: str, actor: str = "agnes") -> AuditEntry:
    (entry,) = audited(intent, action)
    assert (entry.actor, entry.role, entry.merchant_id, entry.reason) == (
        actor,
        "support_agent",
        intent.merchant_id,
        NOTE,
    )
    assert entry.client_address == "127.0.0.1"
    return entry


def underpaid(merchant, *, created=None) -> PaymentIntent:
    """10 USDC due, 4 USDC paid and confirmed (12 confirmations on ethereum): 6 USDC left."""
    now = timezone.now()
    intent = new_intent(merchant, now=created or now)
    services.chain_tip_record(network_code="ethereum", height=140, block_hash="0xb140", now=now)
    block_time = (created or now) + timedelta(minutes=1)
    services.observation_record(
        transfer=transfer(intent, tx=f"0xpart{intent.pk}", amount=4_000_000, **block(100, block_time)),
        now=now,
    )
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "underpaid"
    return intent


def overpaid(merchant) -> PaymentIntent:
    """10 USDC due, 15 paid: 5 USDC excess."""
    now = timezone.now()
    intent = new_intent(merchant, now=now)
    services.chain_tip_record(network_code="ethereum", height=140, block_hash="0xb140", now=now)
    services.observation_record(
        transfer=transfer(intent, tx=f"0xbig{intent.pk}", amount=15_000_000, **block(100, now)), now=now
    )
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "overpaid"
    return intent


def wrong_network(merchant) -> PaymentIntent:
    """10 USDC due on ethereum; 7.5 USDC sent to the same address on Polygon."""
    now = timezone.now()
    intent = new_intent(merchant, now=now)
    services.observation_record(
        transfer=transfer(
            intent,
            network_code="polygon",
            token_contract=POLYGON_USDC,
            tx=f"0xpoly{intent.pk}",
            amount=7_500_000,
            **block(5, now),
        ),
        now=now,
    )
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert "wrong_network" in intent.flags
    return intent


# --- resend the checkout link -------------------------------------------------------------------


def test_resending_the_checkout_link_tells_the_merchant_and_shows_the_link(shop, agent, settings):
    intent = new_intent(shop)
    checkout_url = f"{settings.PUBLIC_BASE_URL}/pay/{intent.checkout_token}"
    shown = agent.get(url(intent, "resend_checkout_link"))
    assert shown.status_code == 200 and checkout_url in shown.content.decode()
    response = agent.post(url(intent, "resend_checkout_link"), {"note": f"  {NOTE}  "})
    assert response.status_code == 302 and response["Location"] == page_of(intent)
    (event,) = Event.objects.filter(intent=intent, type="payment.checkout_link_resent")
    assert event.payload["checkout_url"] == checkout_url
    entry = assert_audited(intent, "payment.checkout_link_resent")
    assert entry.after["checkout_url"] == checkout_url
    # each resend is its own event
    agent.post(url(intent, "resend_checkout_link"), {"note": NOTE})
    assert Event.objects.filter(intent=intent, type="payment.checkout_link_resent").count() == 2


def test_a_note_is_required(shop, agent):
    intent = new_intent(shop)
    response = agent.post(url(intent, "resend_checkout_link"), {"note": "   "})
    assert response.status_code == 400
    assert not Event.objects.filter(type="payment.checkout_link_resent").exists()
    assert not audited(intent, "payment.checkout_link_resent")


def test_the_checkout_link_of_a_paid_payment_is_not_resent(shop, agent):
    intent = overpaid(shop)
    response = agent.post(url(intent, "resend_checkout_link"), {"note": NOTE})
    assert response.status_code == 409 and "no longer payable" in response.content.decode()
    assert not Event.objects.filter(type="payment.checkout_link_resent").exists()


# --- request a top-up ---------------------------------------------------------------------------


def test_a_top_up_moves_the_deadline_and_a_later_top_up_pays(shop, agent):
    created = timezone.now() - timedelta(hours=1)  # its 15-minute window closed 45 minutes ago
    intent = underpaid(shop, created=created)
    assert intent_representation(intent)["payment_deadline"] == intent.expires_at.isoformat()
    shown = agent.get(url(intent, "request_top_up")).content.decode()
    assert "6.000000 USDC" in shown
    before = timezone.now()
    response = agent.post(url(intent, "request_top_up"), {"hours": "48", "note": NOTE}, follow=True)
    assert response.redirect_chain == [(page_of(intent), 302)]
    (resolution,) = Resolution.objects.filter(intent=intent, kind="extend_deadline")
    assert before + timedelta(hours=48) <= resolution.until <= timezone.now() + timedelta(hours=48)
    assert resolution.actor.username == "agnes" and resolution.reason == NOTE
    (event,) = Event.objects.filter(intent=intent, type="payment.top_up_requested")
    assert event.payload["amount_remaining"] == {"value": "6.000000", "base_units": "6000000"}
    assert event.payload["payment_uri_remaining"].endswith("uint256=6000000")
    assert event.payload["payment_deadline"] == resolution.until.isoformat()
    entry = assert_audited(intent, "payment.top_up_requested")
    assert entry.after["payment_deadline"] == resolution.until.isoformat()
    # the rest, first seen now (after the original expiry, before the new deadline), counts
    now = timezone.now()
    services.observation_record(
        transfer=transfer(intent, tx="0xrest", amount=6_000_000, **block(101, now)), now=now
    )
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"


def test_the_checkout_counts_down_to_the_extended_deadline(shop, agent):
    intent = underpaid(shop, created=timezone.now() - timedelta(hours=1))
    client = Client()
    assert client.get(f"/pay/{intent.checkout_token}/status").json()["seconds_left"] is None
    agent.post(url(intent, "request_top_up"), {"hours": "2", "note": NOTE})
    status = client.get(f"/pay/{intent.checkout_token}/status").json()
    assert 2 * 3600 - 60 < status["seconds_left"] <= 2 * 3600
    assert status["show_payment"] is True


def test_a_top_up_is_asked_only_of_an_underpaid_payment(shop, agent):
    intent = overpaid(shop)
    response = agent.post(url(intent, "request_top_up"), {"hours": "24", "note": NOTE})
    assert response.status_code == 409
    assert "a top-up is asked for an underpaid payment" in response.content.decode()
    assert not Resolution.objects.exists()


# --- overpayment --------------------------------------------------------------------------------


def test_an_overpayment_decision_is_recorded_and_a_new_one_supersedes_it(shop, agent):
    intent = overpaid(shop)
    assert "5.000000 USDC" in agent.get(url(intent, "decide_overpayment")).content.decode()
    response = agent.post(url(intent, "decide_overpayment"), {"decision": "refund", "note": NOTE})
    assert response.status_code == 302
    decision = OverpaymentDecision.objects.get()
    assert (decision.decision, int(decision.excess_base_units), decision.actor.username) == (
        "refund",
        5_000_000,
        "agnes",
    )
    (event,) = Event.objects.filter(intent=intent, type="payment.overpayment_decision")
    assert event.payload["overpayment_decision"]["decision"] == "refund"
    assert event.payload["state"] == "overpaid"
    assert_audited(intent, "payment.overpayment_decision")
    agent.post(url(intent, "decide_overpayment"), {"decision": "keep", "note": NOTE})
    current = OverpaymentDecision.objects.filter(intent=intent, superseded_at=None)
    assert list(current.values_list("decision", flat=True)) == ["keep"]
    assert OverpaymentDecision.objects.count() == 2


# --- replay webhooks ----------------------------------------------------------------------------


def test_replaying_a_payments_webhooks_queues_each_event_again(shop, agent):
    endpoint, _ = endpoint_create(merchant=shop, url="http://127.0.0.1:9/hook", now=timezone.now())
    intent = underpaid(shop)
    events = set(intent.events.values_list("pk", flat=True))
    assert len(events) >= 3  # created, awaiting_payment, underpaid
    response = agent.post(url(intent, "replay_webhooks"), {"note": NOTE})
    assert response.status_code == 302
    replays = WebhookDelivery.objects.filter(kind="replay", endpoint=endpoint)
    assert set(replays.values_list("event_id", flat=True)) == events and replays.count() == len(events)
    assert replays.first().requested_by == "admin:agnes"
    entry = assert_audited(intent, "payment.webhooks_replayed")
    assert entry.after["deliveries"] == len(events)


def test_replaying_selected_events(shop, agent):
    endpoint_create(merchant=shop, url="http://127.0.0.1:9/hook", now=timezone.now())
    intent = underpaid(shop)
    chosen = intent.events.get(type="payment.underpaid")
    assert (
        f"#{chosen.sequence} payment.underpaid" in agent.get(url(intent, "replay_webhooks")).content.decode()
    )
    response = agent.post(url(intent, "replay_webhooks"), {"note": NOTE, "events": [chosen.pk]})
    assert response.status_code == 302
    replays = WebhookDelivery.objects.filter(kind="replay")
    assert list(replays.values_list("event_id", flat=True)) == [chosen.pk]
    assert assert_audited(intent, "payment.webhooks_replayed").after["events"] == [chosen.pk]


def test_every_action_shows_its_form(shop, agent):
    for name, (_, make) in ACTIONS.items():
        intent = make(shop)
        page = agent.get(url(intent, name))
        assert page.status_code == 200, name
        assert 'name="note"' in page.content.decode() and "csrfmiddlewaretoken" in page.content.decode()


def test_replaying_without_an_endpoint_says_so(shop, agent):
    intent = new_intent(shop)
    response = agent.post(url(intent, "replay_webhooks"), {"note": NOTE})
    assert response.status_code == 409 and "no enabled webhook endpoint" in response.content.decode().lower()
    assert not audited(intent, "payment.webhooks_replayed")


# --- attach a transaction hash (without a node: the refusals) ------------------------------------


def test_attaching_on_a_node_that_does_not_answer_says_so(shop, agent):
    intent = new_intent(shop)  # ethereum's node in the tests is a port nothing listens on
    response = agent.post(
        url(intent, "attach_transaction"), {"network": "ethereum", "tx_hash": "0x" + "ab" * 32, "note": NOTE}
    )
    assert response.status_code == 409 and "node did not answer" in response.content.decode()
    assert "127.0.0.1:9" in response.content.decode()
    assert not audited(intent, "payment.transaction_attached")


def test_attaching_a_malformed_hash_or_on_a_network_the_address_cannot_be_paid_on_is_refused(shop, agent):
    intent = new_intent(shop)
    bad_hash = agent.post(
        url(intent, "attach_transaction"), {"network": "ethereum", "tx_hash": "0x12", "note": NOTE}
    )
    assert bad_hash.status_code == 409 and "0x and 64 hex digits" in bad_hash.content.decode()
    bitcoin = agent.post(
        url(intent, "attach_transaction"), {"network": "bitcoin", "tx_hash": "ab" * 32, "note": NOTE}
    )
    assert bitcoin.status_code == 400, "an EVM address is not offered a Bitcoin network"


# --- escalate a wrong-network payment ------------------------------------------------------------


def test_escalating_a_wrong_network_payment_marks_its_case_and_shows_the_recovery_facts(shop, agent):
    intent = wrong_network(shop)
    shown = agent.get(url(intent, "escalate_wrong_network")).content.decode()
    poly = f"0xpoly{intent.pk}"
    assert "Arrived on Polygon" in shown and "7.500000 USDC" in shown and poly in shown
    assert "controlled by the merchant&#x27;s own key" in shown
    assert intent_representation(intent)["address"] in shown
    response = agent.post(url(intent, "escalate_wrong_network"), {"note": NOTE})
    assert response.status_code == 302
    case = SupportCase.objects.get(intent=intent, kind="wrong_network")  # opened: the reader had not yet
    assert case.escalated_at is not None and case.escalated_by.username == "agnes"
    assert case.status == "in_progress" and case.transaction_hashes == [poly]
    assert list(CaseNote.objects.filter(case=case).values_list("body", flat=True)) == [NOTE]
    entry = assert_audited(intent, "payment.wrong_network_escalated")
    assert entry.after["funds"] == [{"network": "polygon", "amount": "7.500000 USDC", "tx_hash": poly}]
    # the stream reader catches up later and opens no second case for the same exception
    from payments.webhooks.delivery import events_dispatch
    from support.cases import cases_open

    events_dispatch(now=timezone.now())
    cases_open(now=timezone.now())
    assert SupportCase.objects.filter(intent=intent, kind="wrong_network").count() == 1


def test_escalated_cases_are_a_filter_for_leads(shop, agent):
    intent = wrong_network(shop)
    agent.post(url(intent, "escalate_wrong_network"), {"note": NOTE})
    other = underpaid(shop)
    SupportCase.objects.create(
        kind="overpaid",
        merchant=shop,
        intent=other,
        dedupe_key="x",
        opened_at=timezone.now(),
        due_by=timezone.now(),
    )
    lead = person("support_lead", shop, username="lena")
    listed = lead.get("/admin/support/supportcase/?escalated=yes")
    assert listed.status_code == 200
    assert [c.intent_id for c in listed.context["cl"].result_list] == [intent.pk]


def test_escalation_needs_a_wrong_network_payment(shop, agent):
    intent = underpaid(shop)
    response = agent.post(url(intent, "escalate_wrong_network"), {"note": NOTE})
    assert response.status_code == 409 and not SupportCase.objects.exists()


# --- who may act --------------------------------------------------------------------------------

ACTIONS = {
    "resend_checkout_link": ({"note": NOTE}, new_intent),
    "request_top_up": ({"note": NOTE, "hours": "24"}, underpaid),
    "decide_overpayment": ({"note": NOTE, "decision": "keep"}, overpaid),
    "replay_webhooks": ({"note": NOTE}, new_intent),
    "attach_transaction": ({"note": NOTE, "network": "ethereum", "tx_hash": "0x" + "ab" * 32}, new_intent),
    "escalate_wrong_network": ({"note": NOTE}, wrong_network),
}


# From the role definitions (docs/SUPPORT.md): the roles that work cases take the safe actions.
ACTING_ROLES = {"support_agent", "support_lead"}
ROLES = ("support_agent", "support_lead", "finance", "merchant_admin", "auditor")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_who_may_act_every_role_on_own_and_other_merchant(name, role, shop, other_shop):
    data, make = ACTIONS[name]
    client = person(role, shop, username=f"{role}-user")
    endpoint_create(merchant=shop, url="http://127.0.0.1:9/hook", now=timezone.now())  # for the replay
    own, other = make(shop), make(other_shop)
    events = Event.objects.count()
    assert client.post(url(other, name), data).status_code == 404
    assert client.get(url(other, name)).status_code == 404
    answer = client.post(url(own, name), data).status_code
    if role in ACTING_ROLES:
        # attach_transaction reaches the (unreachable) node and says so: 409, past the permission checks
        assert answer == (409 if name == "attach_transaction" else 302)
        return
    assert answer == 403
    assert Event.objects.count() == events
    assert not AuditEntry.objects.filter(object_type="payment_intent").exists()


def test_the_services_check_scope_themselves(shop, other_shop, agent):
    """Called directly (not through the dispatcher), a service refuses another merchant's payment."""
    from django.contrib.auth.models import User
    from django.core.exceptions import PermissionDenied

    from support.payment_actions import checkout_link_resend

    intent = new_intent(other_shop)
    with pytest.raises(PermissionDenied):
        checkout_link_resend(
            actor=User.objects.get(username="agnes"), intent=intent, note=NOTE, now=timezone.now()
        )


def test_finance_lists_the_overpayment_decisions_of_its_merchants(shop, other_shop, agent):
    intent = overpaid(shop)
    agent.post(url(intent, "decide_overpayment"), {"decision": "refund", "note": NOTE})
    theirs = overpaid(other_shop)
    OverpaymentDecision.objects.create(
        intent=theirs,
        merchant=other_shop,
        decision="keep",
        excess_base_units=5_000_000,
        actor=OverpaymentDecision.objects.get().actor,
        reason=NOTE,
        decided_at=timezone.now(),
    )
    finance = person("finance", shop, username="fin")
    listed = finance.get("/admin/support/overpaymentdecision/")
    assert listed.status_code == 200
    assert [d.intent_id for d in listed.context["cl"].result_list] == [intent.pk]
    assert "5.000000 USDC" in listed.content.decode()
    decision = OverpaymentDecision.objects.get(intent=intent)
    assert finance.post(f"/admin/support/overpaymentdecision/{decision.pk}/change/", {}).status_code == 403

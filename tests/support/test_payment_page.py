"""The payment page tells one payment's whole story in human units, re-checks its evidence without writing,
offers only what the user may do (no Save or Delete on evidence) and stays inside the user's merchants.
Expected amounts are worked out by hand from base units and the asset's decimals."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.utils import quote
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from payments import services
from payments.models import (
    Network,
    NetworkAsset,
    PaymentIntent,
    Resolution,
    StateTransition,
    WebhookAttempt,
    WebhookDelivery,
)
from payments.models.reference import explorer_tx_url_validate
from payments.webhooks.delivery import deliver_due, events_dispatch
from payments.webhooks.endpoints import endpoint_create
from support import console
from support.audit import audit_record
from support.cases import case_note_add, cases_open
from support.models import SupportCase
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import block, new_intent, transfer
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db

USDT_ETH = "0xdac17f958d2ee523a2206206994597c13d831ec7"
PAID_TX = "0x" + "ab" * 32
AGAIN_TX = "0x" + "cd" * 32
USDT_TX = "0x" + "ef" * 32
READER = (
    "view_paymentintent",
    "view_merchant",
    "view_event",
    "support.view_supportcase",
    "support.view_casenote",
    "support.view_auditentry",
)


def page_url(intent) -> str:
    return f"/admin/payments/paymentintent/{intent.pk}/change/"


def text_of(response) -> str:
    """The page's text with tags dropped and white space collapsed, to assert on what a person reads."""
    html = response.content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    return re.sub(r" ([,:;])", r"\1", text)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def story(receiver):
    """A 12.50 USD order paid in USDC on Ethereum: paid in one transaction, then paid again (a duplicate),
    plus USDT sent to the same address (wrong asset); events delivered to an endpoint that failed once;
    cases opened from the event stream, one with a note; an audit entry about the payment."""
    now = timezone.now()
    merchant = make_merchant("Corner shop")
    endpoint_create(merchant=merchant, url=receiver.url, now=now)
    receiver.answers.append(500)  # the first delivery fails once, then succeeds
    usdc = NetworkAsset.objects.select_related("asset", "network").get(
        asset__code="USDC", network__code="ethereum"
    )
    data = services.IntentInput(
        price_amount=Decimal("12.50"),
        price_currency="USD",
        network_asset=usdc,
        merchant_order_id="order-42",
        customer_id="cust-7",
    )
    intent = services.payment_intent_create(merchant=merchant, data=data, now=now)
    services.chain_tip_record(network_code="ethereum", height=111, block_hash="0xb111", now=now)
    services.observation_record(
        transfer=transfer(intent, tx=PAID_TX, amount=12_500_000, **block(100, now)), now=now
    )
    services.observation_record(
        transfer=transfer(intent, tx=AGAIN_TX, amount=1_000_000, **block(101, now)), now=now
    )
    services.observation_record(
        transfer=transfer(intent, tx=USDT_TX, amount=3_000_000, token_contract=USDT_ETH, **block(102, now)),
        now=now,
    )
    events_dispatch(now=now)
    deliver_due(now=now)
    deliver_due(now=now + timedelta(hours=1))  # the retry of the failed attempt
    cases_open(now=now)
    lead = make_staff("support.change_supportcase", "support.add_casenote", username="lead1")
    case = SupportCase.objects.get(intent=intent, kind="duplicate_payment")
    case_note_add(actor=lead, case=case, body="Customer paid twice; asking the merchant.", now=now)
    audit_record(
        actor="lead1",
        role="support_lead",
        action="payment.checkout_link_resent",
        merchant_id=merchant.pk,
        object_type="payment_intent",
        object_id=intent.pk,
        reason="the customer lost the link",
        now=now,
    )
    return PaymentIntent.objects.get(pk=intent.pk)


def test_the_page_tells_the_whole_story_in_the_assets_units(client, story):
    intent = story
    assert intent.state == "paid" and WebhookAttempt.objects.filter(outcome="failed").count() == 1
    client.force_login(make_staff(*READER))
    response = client.get(page_url(intent))
    assert response.status_code == 200
    html, text = response.content.decode(), text_of(response)
    assert f'href="/admin/payments/merchant/{quote(intent.merchant_id)}/change/"' in html
    assert "Corner shop" in text and "order-42" in text and "cust-7" in text
    assert "12.50 USD" in text  # the price as asked
    # 12.50 USD at the USDC peg (1 USDC = 1 USD): 12_500_000 base units with 6 decimals
    assert "1 USDC = 1 USD" in text and "peg:USDC=USD" in text
    assert "Quote object" not in text
    assert "amount due 12.500000 USDC" in text
    assert "seen (counted) 12.500000 USDC" in text and "confirmed 12.500000 USDC" in text
    assert "remaining -" in text
    assert "12500000" not in text, "never base units"
    # each transaction: asset, amount in its own decimals, confirmations against tip 111, classification
    assert f'href="https://etherscan.io/tx/{PAID_TX}"' in html
    assert f"{PAID_TX} #0 ethereum USDC 12.500000 USDC 100 12 yes" in text
    assert f"{AGAIN_TX} #0 ethereum USDC 1.000000 USDC 101 11 yes" in text
    assert f"{USDT_TX} #0 ethereum USDT 3.000000 USDT 102 10 yes" in text
    assert "duplicate (the payment was complete before it)" in text and "wrong asset" in text
    assert "created awaiting_payment" in text
    assert "awaiting_payment paid confirmed funds meet the amount due" in text
    # events with their deliveries and attempts: the first failed once (HTTP 500), then succeeded
    assert "payment.paid" in text and "payment.duplicate_payment_detected" in text
    assert "payment.wrong_asset_detected" in text
    assert f"{receiver_url(intent)} (original): delivered, 2 attempts" in text
    assert "#1" in text and "failed (HTTP 500)" in text and "succeeded (HTTP 200)" in text
    # cases, their notes and links to the case page; the audit entry about the payment
    case = SupportCase.objects.get(intent=intent, kind="duplicate_payment")
    assert f'href="/admin/support/supportcase/{case.pk}/change/"' in html
    assert "duplicate payment" in text and "Customer paid twice; asking the merchant." in text
    assert "lead1 support_lead payment.checkout_link_resent the customer lost the link" in text
    # checkout link as the API gives it; the fresh verdict agrees with what is stored
    assert f"/pay/{intent.checkout_token}" in html
    assert "agrees with the stored payment" in text
    assert "(24 h after the deadline)" in text  # the default late-payment window
    assert "state paid paid" in text
    # read-only evidence: no Save, Delete or "Save and add another", nothing to post
    main = html.split('id="content-main"')[1]
    assert 'type="submit"' not in main and "<form" not in main and "<button" not in main
    assert "Save" not in text and "deletelink" not in html and "Delete" not in text
    assert "No action is available to you on this payment." in text


def receiver_url(intent) -> str:
    return WebhookDelivery.objects.filter(event__intent=intent).first().endpoint.url


def test_check_now_shows_a_stale_state_beside_the_fresh_verdict_and_writes_nothing(client):
    intent = new_intent(now=timezone.now() - timedelta(hours=1))  # expired, but no sweep has run
    client.force_login(make_staff("view_paymentintent"))
    transitions = StateTransition.objects.filter(intent=intent).count()
    text = text_of(client.get(page_url(intent)))
    assert "differs from the stored payment: state" in text
    assert "state awaiting_payment expired" in text and "no valid funds arrived before the deadline" in text
    assert PaymentIntent.objects.get(pk=intent.pk).state == "awaiting_payment"
    assert StateTransition.objects.filter(intent=intent).count() == transitions
    # an unprivileged reader is told what is not theirs to see, without a link
    assert "Your role does not include support cases." in text
    assert "Your role does not include the audit log." in text
    assert "/admin/payments/merchant/" not in client.get(page_url(intent)).content.decode()


def test_a_resolution_is_shown_with_actor_reason_and_transaction(client):
    created = timezone.now() - timedelta(hours=1)
    intent = new_intent(now=created)
    now = timezone.now()
    services.expire_due_intents(now=now)
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
    observation = services.observation_record(
        transfer=transfer(intent, tx="0xlate", **block(150, now)), now=now
    )
    lead = make_staff("view_paymentintent", username="lead2")
    Resolution.objects.create(
        intent=intent,
        kind="accept_late_payment",
        observation=observation,
        actor=lead,
        reason="Paid 3 min late.",
    )
    client.force_login(lead)
    text = text_of(client.get(page_url(intent)))
    assert "accept late payment lead2 0xlate Paid 3 min late." in text
    # the fresh evaluation counts the accepted transaction; the stored state has not been settled yet
    assert "state expired paid" in text and "counted" in text


def test_another_merchants_payment_is_a_404_even_with_the_view_permission(client):
    own, other = make_merchant("Own", account=0), make_merchant("Other", account=1)
    theirs = new_intent(other)
    client.force_login(make_staff("view_paymentintent", merchants=[own]))
    assert client.get(page_url(theirs)).status_code == 404
    assert client.get(page_url(new_intent(own))).status_code == 200


def test_the_page_refuses_posts(client):
    intent = new_intent()
    client.force_login(make_staff("view_paymentintent", "change_paymentintent", "delete_paymentintent"))
    assert client.post(page_url(intent), {"merchant_order_id": "x"}).status_code == 403
    assert (
        client.post(f"/admin/payments/paymentintent/{intent.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert PaymentIntent.objects.filter(pk=intent.pk, merchant_order_id="").exists()


@pytest.fixture
def throwaway_action():
    """A registered action for the test only (removed afterwards): its view answers with a marker."""
    ran: list[str] = []

    def view(request, intent, context):
        ran.append(intent.pk)
        assert context["opts"].model_name == "paymentintent" and "site_header" in context
        return HttpResponse(f"ran on {intent.pk}")

    console.payment_action("test_nudge", label="Nudge the payment", permission="payments.view_network")(view)
    console.payment_action(
        "test_smash", label="Smash the payment", permission="payments.view_network", dangerous=True
    )(view)
    yield ran
    del console.PAYMENT_ACTIONS["test_nudge"], console.PAYMENT_ACTIONS["test_smash"]


def test_actions_are_dispatched_with_scope_and_permission_checks(client, throwaway_action):
    own, other = make_merchant("Own", account=0), make_merchant("Other", account=1)
    mine, theirs = new_intent(own), new_intent(other)
    action = "/admin/payments/paymentintent/{}/action/test_nudge/"
    permitted = make_staff("view_paymentintent", "view_network", merchants=[own])
    client.force_login(permitted)
    assert client.get(action.format(theirs.pk)).status_code == 404, "another merchant's payment"
    response = client.get(action.format(mine.pk))
    assert response.status_code == 200 and response.content == f"ran on {mine.pk}".encode()
    assert throwaway_action == [mine.pk]
    assert client.get(f"/admin/payments/paymentintent/{mine.pk}/action/no_such_action/").status_code == 404
    # the page offers both, safe and dangerous apart, each linking to its URL
    html = client.get(page_url(mine)).content.decode()
    # the links quote the id as the admin's own do ("_" becomes "_5F")
    assert f'class="button safe-action" href="{action.format(quote(mine.pk))}"' in html
    assert (
        f'class="button danger-action" href="/admin/payments/paymentintent/{quote(mine.pk)}/action/test_smash/"'
        in html
    )
    assert html.index("Safe actions") < html.index("Nudge the payment") < html.index("Dangerous actions")
    assert "No action is available" not in html
    # without the action's permission: no button, and the URL is a 403 (the view never runs)
    client.force_login(make_staff("view_paymentintent", merchants=[own]))
    assert client.post(action.format(mine.pk)).status_code == 403
    assert throwaway_action == [mine.pk]
    html = client.get(page_url(mine)).content.decode()
    assert "Nudge the payment" not in html and "No action is available to you on this payment." in html


def test_fifty_events_render_in_a_bounded_number_of_queries(client, django_assert_max_num_queries):
    merchant = make_merchant()
    now = timezone.now()
    endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook", now=now)
    endpoint_create(merchant=merchant, url="http://127.0.0.1:9/other", now=now)
    intent = new_intent(merchant, now=now)
    client.force_login(make_staff(*READER))

    def render() -> int:
        events_dispatch(now=now)
        WebhookAttempt.objects.bulk_create(
            WebhookAttempt(delivery=d, number=1, started_at=now, status_code=500, outcome="failed")
            for d in WebhookDelivery.objects.filter(attempt_log__isnull=True)
        )
        with CaptureQueriesContext(connection) as queries:
            assert client.get(page_url(intent)).status_code == 200
        return len(queries)

    few = render()
    fresh = PaymentIntent.objects.get(pk=intent.pk)
    services.events_write(
        intent=fresh, events=[(f"payment.test_{n}", f"test:{n}", None) for n in range(48)], transactions=[]
    )
    assert fresh.events.count() == 50
    assert render() == few, "the number of queries does not grow with the events"
    assert WebhookAttempt.objects.filter(delivery__event__intent=intent).count() == 50 * 2  # two endpoints
    with django_assert_max_num_queries(40):
        client.get(page_url(intent))


def test_explorer_url_is_an_https_template_with_the_hash():
    ethereum = Network.objects.get(code="ethereum")
    assert ethereum.explorer_url("0xabc") == "https://etherscan.io/tx/0xabc"
    assert Network.objects.get(code="bitcoin").explorer_tx_url == "https://mempool.space/tx/{tx}"
    assert Network.objects.get(code="evm-local").explorer_url("0xabc") is None
    assert Network.objects.get(code="bitcoin-regtest").explorer_tx_url == ""
    explorer_tx_url_validate("https://blockstream.info/tx/{tx}")
    for bad in (
        "http://etherscan.io/tx/{tx}",
        "https://etherscan.io/tx/",
        "javascript:alert(1)//{tx}",
        "{tx}",
    ):
        with pytest.raises(ValidationError):
            explorer_tx_url_validate(bad)


def test_explorer_url_is_edited_in_the_network_admin(admin_client):
    network = Network.objects.get(code="polygon")
    page = admin_client.get(f"/admin/payments/network/{network.pk}/change/")
    assert b'name="explorer_tx_url"' in page.content and b"https://polygonscan.com/tx/{tx}" in page.content


def test_a_payment_whose_asset_is_not_chosen_yet_renders(client):
    merchant = make_merchant()
    data = services.IntentInput(price_amount=Decimal("49"), price_currency="EUR")
    intent = services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())
    client.force_login(make_staff("view_paymentintent"))
    response = client.get(page_url(intent))
    assert response.status_code == 200
    text = text_of(response)
    assert "49.00 EUR" in text and "not chosen yet" in text and "no asset chosen yet" in text
    assert "amount due -" in text and "No transaction seen to this payment's address." in text

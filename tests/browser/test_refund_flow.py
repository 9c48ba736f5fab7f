"""A refund from start to end, as the people in it see it (issue 13): the merchant asks for it over the
API, the customer enters the destination on the refund page in Chromium (a typo refused first), the
merchant's wallet pays it from an account unrelated to the payment, the scanner sees it on anvil:
refund.succeeded and payment.refunded reach the merchant's receiver, signed."""

from __future__ import annotations

import subprocess
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from standardwebhooks import Webhook

from devchain.anvil import token_transfer, token_units
from payments import services
from payments.chains.evm import EvmBackend
from payments.models import NetworkAsset, PaymentIntent
from payments.scanning import network_scan
from payments.webhooks.delivery import deliver_due, events_dispatch
from payments.webhooks.endpoints import endpoint_create
from tests.factories import make_api_key, make_merchant
from tests.integration.test_concurrency import client_for
from tests.webhooks.receiver import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_webhooks")]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def scan(backend):
    return network_scan(backend=backend, now=timezone.now())


def received(receiver: Receiver, secret: str) -> list[dict]:
    now = timezone.now()
    events_dispatch(now=now)
    deliver_due(now=now)
    events = [Webhook(secret).verify(r.body, r.headers) for r in receiver.received]
    return sorted(events, key=lambda e: e["data"]["sequence"])  # deliveries run in parallel


def test_refund_requested_over_the_api_destination_from_the_customer_paid_from_anywhere(
    local_usdc, live_server, page, artifacts, receiver, zbarimg
):
    node, token = local_usdc
    backend = EvmBackend("evm-local", node.url)
    merchant = make_merchant("Refund shop")
    _, key = make_api_key(merchant, scopes=("payments:read", "refunds:read", "refunds:write"))
    _, secret = endpoint_create(merchant=merchant, url=receiver.url, now=timezone.now())
    na = NetworkAsset.objects.select_related("asset", "network").get(
        asset__code="USDC", network__code="evm-local"
    )
    intent = services.payment_intent_create(
        merchant=merchant,
        data=services.IntentInput(price_amount=Decimal("25"), price_currency="USDC", network_asset=na),
        now=timezone.now(),
    )
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("25"))
    node.mine(2)
    scan(backend)
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"

    # The merchant refunds everything received; the customer gets the link.
    api = client_for(key)
    created = api.post(
        "/api/v1/refunds",
        {
            "payment_intent": intent.pk,
            "amount": {"kind": "received"},
            "reason": "order canceled by the customer",
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    refund = created.json()
    assert (refund["state"], refund["destination"], refund["payment_uri"]) == ("approved", None, None)
    assert refund["amount"] == {"value": "25.000000", "base_units": "25000000"}

    # The customer's page: a mistyped address (one capital changed: the EIP-55 checksum fails) is refused.
    customer = node.accounts[4]  # checksummed, as a wallet shows it
    typo = customer[:-1] + (customer[-1].swapcase() if customer[-1].isalpha() else "a")
    page.goto(live_server.url + refund["destination_url"])
    assert page.inner_text("#status-title") == "Where should we send your refund?"
    assert "25.000000 USDC" in page.inner_text("#refund-amount")
    page.fill("#address", typo)
    page.click("#refund-form button")
    assert "not an address of the" in page.inner_text("#refund-error")
    page.screenshot(path=str(artifacts / "refund-typo.png"))
    page.fill("#address", customer)
    page.click("#refund-form button")
    page.wait_for_selector("#refund-destination")
    assert page.inner_text("#status-title") == "Thank you"
    page.screenshot(path=str(artifacts / "refund-thanks.png"))
    # The link does not take a second address.
    page.goto(live_server.url + refund["destination_url"])
    assert page.query_selector("#refund-form") is None

    refund = api.get(f"/api/v1/refunds/{refund['id']}").json()
    assert (refund["state"], refund["destination"]) == ("awaiting_payment", customer.lower())
    # What the merchant's wallet is to pay: EIP-681, the token's transfer of exactly 25 USDC to the customer.
    assert refund["payment_uri"] == (
        f"ethereum:{token.address}@31337/transfer?address={customer}&uint256=25000000"
    )

    # The QR code the API serves (as a wallet would scan it from the screen) decodes to exactly that URI.
    qr_context = page.context.browser.new_context(extra_http_headers={"Authorization": f"Bearer {key}"})
    try:
        qr_page = qr_context.new_page()
        qr_page.goto(live_server.url + refund["payment_qr_url"])
        qr_page.locator("svg").screenshot(path=str(artifacts / "refund-qr.png"))
    finally:
        qr_context.close()
    decoded = subprocess.run(
        [str(zbarimg), "--raw", "-q", str(artifacts / "refund-qr.png")], capture_output=True, text=True
    )
    assert decoded.returncode == 0 and decoded.stdout.strip() == refund["payment_uri"]

    # Paid from an account that has nothing to do with the payment.
    token_transfer(node.w3, token, node.accounts[1], node.accounts[6], token_units("25"))
    token_transfer(node.w3, token, node.accounts[6], customer, token_units("25"))
    node.mine(1)
    scan(backend)
    refund = api.get(f"/api/v1/refunds/{refund['id']}").json()
    assert refund["state"] == "confirmed" and refund["transaction"]["tx_hash"]
    assert PaymentIntent.objects.get(pk=intent.pk).state == "refunded"
    page.goto(live_server.url + created.json()["destination_url"])
    assert page.inner_text("#status-title") == "Your refund was sent"

    events = received(receiver, secret)
    types = [e["type"] for e in events]
    assert [t for t in types if t.startswith("refund.")] == [
        "refund.created",
        "refund.approved",
        "refund.detected",
        "refund.succeeded",
    ]
    assert types[-1] == "payment.refunded"
    succeeded = next(e for e in events if e["type"] == "refund.succeeded")
    assert succeeded["data"]["refund"]["id"] == refund["id"]
    assert succeeded["data"]["amount_refunded"] == {"value": "25.000000", "base_units": "25000000"}
    call_command("verify_payments")  # raises if anything differs from its evidence


def test_a_german_customer_gets_the_german_refund_page(live_server, browser, artifacts):
    from tests.browser.conftest import PHONE
    from tests.payments.test_services_settle import block, new_intent, transfer

    now = timezone.now()
    intent = new_intent(make_merchant("Laden"), amount="10")
    services.observation_record(transfer=transfer(intent, tx="0xde", **block(100, now)), now=now)
    refund = services.refund_create(
        intent_id=intent.pk,
        amount_kind="received",
        reason="Bestellung storniert",
        requested_by="test",
        approved=True,
        now=now,
    )
    from payments.selectors_refunds import refund_destination_path

    context = browser.new_context(viewport=PHONE, locale="de-DE")
    try:
        page = context.new_page()
        page.goto(live_server.url + refund_destination_path(refund))
        assert page.inner_text("#status-title") == "Wohin sollen wir Ihre Erstattung senden?"
        assert "Nur eine Adresse im Netzwerk" in page.inner_text("#refund-form .warning")
        page.fill("#address", "0x" + "12" * 19 + "1g")  # not hex
        page.click("#refund-form button")
        assert page.inner_text("#refund-error").startswith("Dies ist keine Adresse des Netzwerks")
        page.screenshot(path=str(artifacts / "refund-de-phone.png"), full_page=True)
    finally:
        context.close()

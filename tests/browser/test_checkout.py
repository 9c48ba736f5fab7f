"""The checkout in headless Chromium against a live server and anvil: pick the asset, read address and
amount from the page, pay with web3 from a funded account, watch the page reach paid and go back to the
shop; the underpaid and expired pages; the QR code decodes to the payment URI; nothing is fetched from
another host; framing is refused for an origin the merchant did not allow."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from devchain.anvil import token_transfer, token_units
from payments import services
from payments.models import NetworkAsset, PaymentIntent
from payments.scanning import network_scan
from tests.browser.conftest import DESKTOP, PHONE
from tests.factories import make_api_key, make_merchant
from tests.integration.test_scan_evm_anvil import local_usdc  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def api_create(live_server, key: str, **body) -> dict:
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/payment-intents",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def snapshots(page, artifacts, name: str) -> None:
    """The page at desktop and phone width (full page)."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(artifacts / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def scan_until(page, backend, node, title: str, timeout_s: float = 60) -> None:
    """Mine and scan (what beat does) until the page, polling on its own, shows `title`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        node.mine(1)
        network_scan(backend=backend, now=timezone.now())
        try:
            page.wait_for_function(
                "t => document.getElementById('status-title').textContent.trim() === t",
                arg=title,
                timeout=1500,
            )
            return
        except Exception:
            continue
    raise AssertionError(f"the page never showed {title!r}: {page.inner_text('#status-title')!r}")


@pytest.fixture
def shop(local_usdc):  # noqa: F811
    node, token, backend = local_usdc
    merchant = make_merchant("Browser shop")
    _, key = make_api_key(merchant)
    return merchant, key, node, token, backend


def test_pick_pay_and_return_to_the_shop(shop, live_server, page, artifacts, zbarimg):
    _merchant, key, node, token, backend = shop
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
    success = f"{live_server.url}/healthz?order=1001"
    created = api_create(
        live_server, key, amount="12.50", currency="USD", merchant_order_id="1001", success_url=success
    )
    page.goto(created["checkout_url"].replace("http://127.0.0.1:8000", live_server.url))
    assert page.inner_text("#status-title") == "Choose how to pay"
    snapshots(page, artifacts, "1-choose")
    local = NetworkAsset.objects.get(asset__code="USDC", network__code="evm-local")
    page.check(f"input[name=option][value='{local.pk}']")
    page.click("button[type=submit]")
    page.wait_for_selector("#address")
    assert page.inner_text("#status-title") == "Waiting for your payment"
    assert "Send only USDC on the" in page.inner_text(".warning")
    address, amount = page.input_value("#address"), page.input_value("#amount")
    assert amount == "12.500000"
    intent = PaymentIntent.objects.get(pk=created["id"])
    assert address.lower() == intent.address.address
    snapshots(page, artifacts, "2-awaiting")
    # the QR code, as the browser shows it, decodes to exactly the payment URI
    page.locator("#qr").screenshot(path=str(artifacts / "qr.png"))
    decoded = subprocess.run(
        [str(zbarimg), "--raw", "-q", str(artifacts / "qr.png")], capture_output=True, text=True
    )
    uri = api_get(live_server, key, created["id"])["payment_uri"]
    assert decoded.returncode == 0 and decoded.stdout.strip() == uri
    # pay from a funded account, as a customer's wallet would
    token_transfer(node.w3, token, node.accounts[1], address, token_units(amount))
    scan_until(page, backend, node, "Paid, thank you")
    snapshots(page, artifacts, "3-paid")
    page.wait_for_url(success, timeout=10_000)
    assert hosts == {urlsplit(live_server.url).netloc}, hosts


def api_get(live_server, key: str, intent_id: str) -> dict:
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/payment-intents/{intent_id}", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_underpaid_page_shows_what_is_left(shop, live_server, page, artifacts, zbarimg):
    merchant, _key, node, token, backend = shop
    local = NetworkAsset.objects.get(asset__code="USDC", network__code="evm-local")
    intent = services.payment_intent_create(
        merchant=merchant,
        data=services.IntentInput(price_amount=Decimal("20"), price_currency="USDC", network_asset=local),
        now=timezone.now(),
    )
    page.goto(f"{live_server.url}/pay/{intent.checkout_token}")
    token_transfer(node.w3, token, node.accounts[1], page.input_value("#address"), token_units("7.25"))
    scan_until(page, backend, node, "Partly paid")
    page.wait_for_function("() => document.getElementById('amount').value === '12.750000'")
    assert "Send the remaining 12.750000 USDC" in page.inner_text("#status-detail")
    page.wait_for_function(
        "() => { const q = document.getElementById('qr');"
        " return q.src.includes('remaining=1') && q.complete && q.naturalWidth > 0; }"
    )
    page.locator("#qr").screenshot(path=str(artifacts / "qr-remaining.png"))
    decoded = subprocess.run(
        [str(zbarimg), "--raw", "-q", str(artifacts / "qr-remaining.png")], capture_output=True, text=True
    )
    assert decoded.stdout.strip().endswith("uint256=12750000")
    snapshots(page, artifacts, "4-underpaid")


def test_expired_page(shop, live_server, page, artifacts):
    _merchant, key, *_ = shop
    created = api_create(
        live_server,
        key,
        amount="5",
        currency="USDC",
        asset="USDC",
        network="evm-local",
        cancel_url=f"{live_server.url}/healthz?cart",
    )
    page.goto(f"{live_server.url}/pay/{PaymentIntent.objects.get(pk=created['id']).checkout_token}")
    intent = PaymentIntent.objects.get(pk=created["id"])
    services.expire_due_intents(now=intent.expires_at)
    page.wait_for_function(
        "() => document.getElementById('status-title').textContent === 'This payment request has expired'",
        timeout=10_000,
    )
    assert page.locator("#pay").is_hidden() and page.locator("#countdown").is_hidden()
    snapshots(page, artifacts, "5-expired")


class _FramingShop:
    """A shop page on another origin (its own port) that frames the checkout (or serves `html`)."""

    def __init__(self, checkout_url: str, html: str | None = None):
        html = html or (
            f'<!DOCTYPE html><title>shop</title><iframe id="pay" src="{checkout_url}" width="600" height="800"></iframe>'
        )

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("allowed", [False, True])
def test_the_iframe_is_refused_for_an_origin_not_allowed(shop, live_server, page, artifacts, allowed):
    merchant, key, *_ = shop
    created = api_create(live_server, key, amount="5", currency="USDC", asset="USDC", network="evm-local")
    url = f"{live_server.url}/pay/{PaymentIntent.objects.get(pk=created['id']).checkout_token}"
    framing = _FramingShop(url)
    try:
        merchant.checkout_origins = [framing.origin] if allowed else ["https://other-shop.example"]
        merchant.save()
        page.goto(framing.origin, wait_until="load")  # the frame's own load (or refusal) included
        frame = next(f for f in page.frames if f != page.main_frame)
        if allowed:
            frame.wait_for_selector("#status-title", timeout=10_000)
        else:  # Chromium replaces a refused frame with its error page
            deadline = time.monotonic() + 10
            while not frame.url.startswith("chrome-error") and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            assert frame.url.startswith("chrome-error"), frame.url
            assert frame.query_selector("#status-title") is None, frame.url
        page.screenshot(path=str(artifacts / f"6-iframe-{'allowed' if allowed else 'refused'}.png"))
    finally:
        framing.close()


def test_a_german_browser_gets_the_german_page(shop, live_server, browser, artifacts):
    _merchant, key, *_ = shop
    created = api_create(live_server, key, amount="5", currency="USDC", asset="USDC", network="evm-local")
    context = browser.new_context(viewport=PHONE, locale="de-DE")
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/pay/{PaymentIntent.objects.get(pk=created['id']).checkout_token}")
        assert page.inner_text("#status-title") == "Wir warten auf Ihre Zahlung"
        assert "Senden Sie nur USDC im Netzwerk" in page.inner_text(".warning")
        page.screenshot(path=str(artifacts / "7-awaiting-de-phone.png"), full_page=True)
    finally:
        context.close()


def test_the_embed_script_opens_a_modal_and_reports_paid_and_close(live_server, page, artifacts):
    """A shop on another (allowed) origin opens the checkout with embed.js; the parent hears `paid`
    (with the success URL) by postMessage, and `close` from the modal's button."""
    from tests.payments.test_services_settle import block, new_intent, transfer

    intent = new_intent(success_url="https://shop.example/thanks")
    url = f"{live_server.url}/pay/{intent.checkout_token}"
    html = f"""<!DOCTYPE html><title>shop</title><script src="{live_server.url}/static/checkout/embed.js"></script>
<button id="buy">Pay</button><script>
window.events = [];
document.getElementById("buy").onclick = function () {{
  GatewayCheckout.open("{url}", {{
    onPaid: function (m) {{ window.events.push(["paid", m.redirect_url]); }},
    onExpired: function (m) {{ window.events.push(["expired"]); }},
    onClose: function () {{ window.events.push(["close"]); }},
  }});
}};
</script>"""
    shop_page = _FramingShop(url, html)
    try:
        intent.merchant.checkout_origins = [shop_page.origin]
        intent.merchant.save()
        page.goto(shop_page.origin)
        page.click("#buy")
        frame = page.frame_locator("iframe[title=Payment]")
        assert frame.locator("#status-title").inner_text() == "Waiting for your payment"
        now = timezone.now()
        services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
        services.observation_record(transfer=transfer(intent, **block(180, now)), now=now)
        page.wait_for_function("() => window.events.length > 0", timeout=15_000)
        assert page.evaluate("window.events") == [["paid", "https://shop.example/thanks"]]
        page.screenshot(path=str(artifacts / "8-modal-paid.png"))
        page.click("button[aria-label=Close]")
        assert page.evaluate("window.events")[-1] == ["close"]
        assert page.locator("iframe[title=Payment]").count() == 0
        # another payment, left to expire: the parent hears `expired`
        second = new_intent(merchant=intent.merchant)
        page.evaluate(
            "u => GatewayCheckout.open(u, {onExpired: function () { window.events.push(['expired']); }})",
            f"{live_server.url}/pay/{second.checkout_token}",
        )
        page.frame_locator("iframe[title=Payment]").locator("#status-title").wait_for()
        services.expire_due_intents(now=second.expires_at)
        page.wait_for_function("() => window.events.length === 3", timeout=15_000)
        assert page.evaluate("window.events")[-1] == ["expired"]
    finally:
        shop_page.close()


def test_labels_and_focus_order(live_server, page):
    from tests.payments.test_services_settle import new_intent

    intent = new_intent()
    page.goto(f"{live_server.url}/pay/{intent.checkout_token}")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, button, img')]
              .filter(el => el.tagName === 'IMG' ? !el.alt
                     : el.tagName === 'BUTTON' ? !el.textContent.trim()
                     : !(el.labels && el.labels.length))
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate(
                "document.activeElement.id || document.activeElement.dataset.copy || document.activeElement.textContent.trim()"
            )
        )
    assert order == ["amount", "amount", "address", "address"], order


@pytest.mark.parametrize("case", ["overpaid", "late"])
def test_overpaid_and_late_pages(live_server, page, artifacts, case):
    from datetime import timedelta

    from tests.payments.test_services_settle import block, new_intent, transfer

    now = timezone.now()
    intent = new_intent(amount="10", now=now - timedelta(hours=1) if case == "late" else now)
    if case == "late":
        services.expire_due_intents(now=now)
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
    amount = 15_000_000 if case == "overpaid" else 10_000_000
    services.observation_record(transfer=transfer(intent, amount=amount, **block(180, now)), now=now)
    page.goto(f"{live_server.url}/pay/{intent.checkout_token}")
    expected = {
        "overpaid": (
            "Paid, with more than the amount due",
            "The merchant will contact you about the difference.",
        ),
        "late": ("This payment request has expired", "A payment arrived after this request expired."),
    }[case]
    assert page.inner_text("#status-title") == expected[0]
    assert expected[1] in page.inner_text("#status-detail")
    snapshots(page, artifacts, f"9-{case}")


@pytest.mark.parametrize("case", ["detected", "confirming"])
def test_detected_and_confirming_pages(live_server, page, artifacts, case):
    from tests.payments.test_services_settle import block, new_intent, transfer

    now = timezone.now()
    intent = new_intent(amount="10")
    page.goto(f"{live_server.url}/pay/{intent.checkout_token}")
    if case == "detected":
        services.observation_record(transfer=transfer(intent), now=now)  # in the mempool
        title, detail = "Payment seen", "waiting for the network to confirm it"
    else:
        services.chain_tip_record(network_code="ethereum", height=104, block_hash="0xb104", now=now)
        services.observation_record(transfer=transfer(intent, **block(100, now)), now=now)
        title, detail = "Confirming your payment", "5 of 12 confirmations."
    page.wait_for_function(
        "t => document.getElementById('status-title').textContent === t", arg=title, timeout=10_000
    )
    assert detail in page.inner_text("#status-detail")
    snapshots(page, artifacts, f"2b-{case}")


def test_a_choice_page_that_expires_hides_the_options(live_server, page):
    merchant = make_merchant()
    intent = services.payment_intent_create(
        merchant=merchant,
        data=services.IntentInput(
            price_amount=Decimal("5"),
            price_currency="USD",
            network_asset=None,
            cancel_url="https://shop.example/cart",
        ),
        now=timezone.now(),
    )
    page.goto(f"{live_server.url}/pay/{intent.checkout_token}")
    assert page.inner_text("#cancel") == "Cancel and go back"
    services.expire_due_intents(now=intent.expires_at)
    page.wait_for_function(
        "() => document.getElementById('status-title').textContent === 'This payment request has expired'",
        timeout=10_000,
    )
    assert page.locator("#options").is_hidden() and page.locator("#countdown").is_hidden()
    assert page.inner_text("#cancel") == "Back to the shop"

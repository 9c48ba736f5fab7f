"""The checkout page through Django's test client: choosing the asset, the words for every state, the
status document, the QR code, and the page's weight and origins. (The browser tests drive it in
Chromium.)"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from payments import services
from payments.models import NetworkAsset, PaymentIntent
from tests.factories import make_merchant
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db


def unassigned(merchant, currency="USDC", **kw) -> PaymentIntent:
    data = services.IntentInput(
        price_amount=Decimal("25.00"),
        price_currency=currency,
        network_asset=None,
        success_url="https://shop.example/thanks",
        cancel_url="https://shop.example/cart",
        **kw,
    )
    return services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())


def page(intent) -> str:
    response = Client().get(f"/pay/{intent.checkout_token}")
    assert response.status_code == 200
    return response.content.decode()


def status(intent) -> dict:
    return Client().get(f"/pay/{intent.checkout_token}/status").json()


def test_the_customer_chooses_the_asset_then_sees_amount_address_and_qr():
    merchant = make_merchant("Corner shop")
    intent = unassigned(merchant, merchant_order_id="A-17")
    html = page(intent)
    assert "Corner shop" in html and "A-17" in html and "Choose how to pay" in html
    assert "25 USDC" in html
    usdc_eth = NetworkAsset.objects.get(asset__code="USDC", network__code="ethereum")
    assert f'value="{usdc_eth.pk}"' in html
    # priced in USDC: USDC on each network the merchant can take it on, nothing else
    options = re.findall(r'<input type="radio" name="option" value="(\d+)"', html)
    offered = NetworkAsset.objects.filter(pk__in=options)
    assert set(offered.values_list("asset__code", flat=True)) == {"USDC"}
    assert {"ethereum", "base"} <= set(offered.values_list("network__code", flat=True))
    # priced in USD: every asset with a wallet, e.g. Bitcoin mainnet and Litecoin regtest, not Bitcoin testnet
    html_usd = page(unassigned(merchant, currency="USD"))
    options = re.findall(r'<input type="radio" name="option" value="(\d+)"', html_usd)
    networks = set(NetworkAsset.objects.filter(pk__in=options).values_list("network__code", flat=True))
    assert {"ethereum", "bitcoin", "litecoin-regtest", "base"} <= networks
    assert "bitcoin-testnet" not in networks
    response = Client().post(f"/pay/{intent.checkout_token}/select", {"option": usdc_eth.pk})
    assert response.status_code == 302 and response.url == f"/pay/{intent.checkout_token}"
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "awaiting_payment" and intent.network_asset_id == usdc_eth.pk
    html = page(intent)
    assert "Waiting for your payment" in html
    assert "Send only <strong>USDC</strong> on the <strong>Ethereum</strong> network" in html
    assert 'value="25.000000"' in html
    address = PaymentIntent.objects.get(pk=intent.pk).address.address
    assert address.lower() in html.lower()
    qr = Client().get(f"/pay/{intent.checkout_token}/qr.svg")
    assert qr.status_code == 200 and qr["Content-Type"] == "image/svg+xml"
    assert qr.content.startswith(b"<svg") and b"xmlns" in qr.content
    # choosing again is refused: the intent is no longer `created`
    again = Client().post(f"/pay/{intent.checkout_token}/select", {"option": usdc_eth.pk})
    assert again.status_code == 409


def test_a_bad_choice_is_a_400_and_changes_nothing():
    merchant = make_merchant()
    intent = unassigned(merchant)
    for option in ("", "999999", "abc"):
        response = Client().post(f"/pay/{intent.checkout_token}/select", {"option": option})
        assert response.status_code == 400 and b"choose one of the options" in response.content
    assert PaymentIntent.objects.get(pk=intent.pk).state == "created"


def test_unknown_token_is_a_404_and_the_api_id_is_not_a_token():
    intent = new_intent()
    assert Client().get("/pay/nope").status_code == 404
    assert Client().get(f"/pay/{intent.id}").status_code == 404
    assert Client().get("/pay/nope/status").status_code == 404


def test_words_for_each_state_from_the_status_document():
    now = timezone.now()
    intent = new_intent(success_url="https://shop.example/thanks", cancel_url="https://shop.example/cart")
    st = status(intent)
    assert st["state"] == "awaiting_payment" and st["title"] == "Waiting for your payment"
    assert st["amount_due"] == "10.000000" and st["seconds_left"] > 0 and st["redirect_url"] is None
    services.observation_record(transfer=transfer(intent), now=now)
    assert status(intent)["title"] == "Payment seen"
    services.chain_tip_record(network_code="ethereum", height=100, block_hash="0xb100", now=now)
    services.observation_record(transfer=transfer(intent, **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=104, block_hash="0xb104", now=now)
    st = status(intent)
    assert st["state"] == "confirming" and st["detail"] == "5 of 12 confirmations."
    services.chain_tip_record(network_code="ethereum", height=111, block_hash="0xb111", now=now)
    st = status(intent)
    assert st["state"] == "paid" and st["title"] == "Paid, thank you"
    assert st["redirect_url"] == "https://shop.example/thanks" and st["final"] and st["seconds_left"] is None
    assert st["cancel_url"] is None and not st["show_payment"]  # paid: no "cancel"
    assert 'id="continue" target="_top" href="https://shop.example/thanks"' in page(intent)


def test_underpaid_shows_what_is_left_with_its_own_qr():
    now = timezone.now()
    intent = new_intent(amount="10")
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
    services.observation_record(transfer=transfer(intent, amount=4_000_000, **block(180, now)), now=now)
    st = status(intent)
    assert st["state"] == "underpaid"
    assert st["remaining"] == "6.000000"
    assert "Send the remaining 6.000000 USDC" in st["detail"]
    assert st["payment_uri"].endswith("uint256=6000000")
    html = page(intent)
    assert 'value="6.000000"' in html and "qr.svg?remaining=1" in html
    qr = Client().get(f"/pay/{intent.checkout_token}/qr.svg?remaining=1")
    full = Client().get(f"/pay/{intent.checkout_token}/qr.svg")
    assert qr.content != full.content


def test_expired_page_points_back_to_the_shop():
    intent = new_intent(cancel_url="https://shop.example/cart")
    services.expire_due_intents(now=intent.expires_at + timedelta(seconds=1))
    st = status(intent)
    assert st["state"] == "expired" and not st["show_payment"] and st["seconds_left"] is None
    html = page(intent)
    assert "This payment request has expired" in html
    assert 'id="cancel" target="_top" href="https://shop.example/cart"' in html
    assert ">Back to the shop</a>" in html
    assert 'id="pay" hidden' in html


def test_the_page_loads_only_from_the_gateway_and_stays_small():
    intent = new_intent()
    html = page(intent)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert all(
        (s.startswith("/") and not s.startswith("//")) or s.startswith("ethereum:") for s in sources
    ), sources
    total = len(html.encode())
    for path in ("/static/checkout/checkout.css", "/static/checkout/checkout.js"):
        response = Client().get(path)
        assert response.status_code == 200, path
        total += len(b"".join(response.streaming_content) if response.streaming else response.content)
    assert total < 100 * 1024


def test_framing_is_allowed_only_for_the_merchants_origins():
    intent = new_intent()
    response = Client().get(f"/pay/{intent.checkout_token}")
    csp = response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "X-Frame-Options" not in response
    merchant = intent.merchant
    merchant.checkout_origins = ["https://shop.example", "http://127.0.0.1:8801"]
    merchant.save()
    csp = Client().get(f"/pay/{intent.checkout_token}")["Content-Security-Policy"]
    assert "frame-ancestors https://shop.example http://127.0.0.1:8801" in csp


@pytest.mark.parametrize(
    "origin", ["shop.example", "https://shop.example/path", "http://shop.example", "javascript:x"]
)
def test_a_checkout_origin_must_be_an_origin(origin):
    from django.core.exceptions import ValidationError

    merchant = make_merchant(wallets=False)
    merchant.checkout_origins = [origin]
    with pytest.raises(ValidationError):
        merchant.full_clean()


def test_the_page_speaks_the_browsers_language():
    intent = unassigned(make_merchant())
    german = Client(HTTP_ACCEPT_LANGUAGE="de-DE,de;q=0.9,en;q=0.5")
    html = german.get(f"/pay/{intent.checkout_token}").content.decode()
    assert 'lang="de"' in html and "Wählen Sie, wie Sie bezahlen" in html and "Bezahlen mit" in html
    assert (
        german.get(f"/pay/{intent.checkout_token}/status").json()["title"] == "Wählen Sie, wie Sie bezahlen"
    )
    english = Client(HTTP_ACCEPT_LANGUAGE="fr-FR,fr;q=0.9")  # no French: English
    assert "Choose how to pay" in english.get(f"/pay/{intent.checkout_token}").content.decode()


def test_a_late_payment_is_explained():
    created = timezone.now() - timedelta(hours=1)
    intent = new_intent(now=created)
    now = timezone.now()
    services.expire_due_intents(now=now)
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
    services.observation_record(transfer=transfer(intent, **block(150, now)), now=now)
    st = status(intent)
    assert st["state"] == "expired" and st["late"]
    assert st["detail"] == "A payment arrived after this request expired. The merchant will review it."


def test_public_checkout_requests_are_rate_limited_per_client(settings, monkeypatch):
    from django.core.cache import caches

    from payments import ratelimit

    cache = caches["ratelimit"]
    cache.clear()
    monkeypatch.setattr(ratelimit.time, "time", lambda: 1_800_000_000.0)  # one window for the whole test
    settings.GATEWAY_CHECKOUT_RATE_PER_MINUTE = 5
    settings.GATEWAY_CHECKOUT_POLLS_PER_MINUTE = 3
    intent = new_intent()
    second = new_intent(intent.merchant)
    one, other = Client(REMOTE_ADDR="203.0.113.7"), Client(REMOTE_ADDR="203.0.113.8")
    pages = [one.get(f"/pay/{intent.checkout_token}").status_code for _ in range(7)]
    assert pages == [200] * 5 + [429] * 2
    refused = one.get(f"/pay/{intent.checkout_token}")
    assert refused["Content-Type"].startswith("text/plain") and b"Too many requests" in refused.content
    assert 0 < int(refused["Retry-After"]) <= 60
    assert other.get(f"/pay/{intent.checkout_token}").status_code == 200
    # the page's polling has its own budget, per payment
    polls = [one.get(f"/pay/{intent.checkout_token}/status").status_code for _ in range(4)]
    assert polls == [200] * 3 + [429]
    assert one.get(f"/pay/{intent.checkout_token}/status").json()["error"]["code"] == "rate_limited"
    assert one.get(f"/pay/{second.checkout_token}/status").status_code == 200
    cache.clear()


def test_the_client_address_behind_trusted_proxies(settings):
    from django.test import RequestFactory

    from payments.ratelimit import client_address

    settings.GATEWAY_TRUSTED_PROXIES = ["10.0.0.0/8"]
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.9, 10.1.1.1"
    )
    assert client_address(request) == "198.51.100.9"  # the nearest untrusted hop, not a forged first entry
    assert (
        client_address(RequestFactory().get("/", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="1.2.3.4"))
        == "203.0.113.5"
    )


def _luminance(hex_colour: str) -> float:
    digits = hex_colour.lstrip("#")
    digits = "".join(d * 2 for d in digits) if len(digits) == 3 else digits
    rgb = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_colours_meet_wcag_aa_contrast():
    from pathlib import Path

    css = (Path(__file__).resolve().parents[2] / "static/checkout/checkout.css").read_text()
    colours = dict(re.findall(r"--(\w+): (#[0-9a-f]{6}|#[0-9a-f]{3})\b", css))
    pairs = [
        ("ink", "#ffffff"),
        ("muted", "#ffffff"),
        ("accent", "#ffffff"),
        ("bad", "#ffffff"),
        ("warn", "#fff4e0"),
        ("ink", "#fafafa"),
    ]
    for name, background in pairs:
        assert contrast(colours[name], background) >= 4.5, (name, background)
    assert contrast("#ffffff", colours["accent"]) >= 4.5  # the button's text


def test_underpaid_after_the_deadline_no_longer_asks_for_more():
    now = timezone.now()
    intent = new_intent(amount="10", cancel_url="https://shop.example/cart")
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
    services.observation_record(transfer=transfer(intent, amount=4_000_000, **block(180, now)), now=now)
    from payments.checkout import status as checkout_status

    intent = PaymentIntent.objects.select_related(
        "network_asset__asset", "network_asset__network", "address", "merchant"
    ).get(pk=intent.pk)
    late = checkout_status(intent, intent.expires_at + timedelta(seconds=1))
    assert late["state"] == "underpaid" and not late["show_payment"] and late["seconds_left"] is None
    assert "Do not send more" in late["detail"] and late["cancel_url"] is None


def test_a_shop_that_cannot_take_payments_says_so():
    merchant = make_merchant()
    intent = unassigned(merchant)
    merchant.is_active = False
    merchant.save()
    html = page(intent)
    assert "This shop cannot take payments right now." in html and 'name="option"' not in html
    refused = Client().post(f"/pay/{intent.checkout_token}/select", {"option": "1"})
    assert refused.status_code == 400

"""Bad input: every case a 4xx with a stable error code, and no row written."""

from __future__ import annotations

import json

import pytest

from payments.models import (
    Event,
    IdempotencyRecord,
    NetworkAsset,
    PaymentAddress,
    PaymentIntent,
    Quote,
    StateTransition,
    Wallet,
)
from payments.services import network_asset_resolve
from tests.factories import make_merchant

pytestmark = pytest.mark.django_db

GOOD = {"amount": "10.00", "currency": "USDC", "asset": "USDC", "network": "ethereum"}


def tables():
    return [
        m.objects.count()
        for m in (PaymentIntent, PaymentAddress, Quote, StateTransition, Event, IdempotencyRecord)
    ]


CASES = [
    # (name, body changes, status, code, param)
    ("negative amount", {"amount": "-1"}, 400, "invalid_amount", "amount"),
    ("zero amount", {"amount": "0"}, 400, "amount_not_positive", "amount"),
    ("zero with decimals", {"amount": "0.000"}, 400, "amount_not_positive", "amount"),
    ("NaN amount", {"amount": "NaN"}, 400, "invalid_amount", "amount"),
    ("Infinity amount", {"amount": "Infinity"}, 400, "invalid_amount", "amount"),
    ("exponent amount", {"amount": "1e3"}, 400, "invalid_amount", "amount"),
    ("float amount", {"amount": 10.5}, 400, "invalid_amount", "amount"),
    ("spaces in amount", {"amount": " 10"}, 400, "invalid_amount", "amount"),
    ("amount too large", {"currency": "USD", "amount": "1" * 23}, 400, "amount_too_large", "amount"),
    ("more decimals than any asset", {"amount": "1." + "1" * 19}, 400, "amount_too_precise", "amount"),
    ("too many decimals for USDC", {"amount": "1.0000001"}, 400, "amount_too_precise", "amount"),
    (
        "too many decimals for USD",
        {"currency": "USD", "amount": "1.001"},
        400,
        "amount_too_precise",
        "amount",
    ),
    ("missing amount", {"amount": None}, 400, "parameter_missing", "amount"),
    ("unknown asset", {"asset": "DOGE"}, 400, "unknown_asset", "asset"),
    ("unknown network", {"network": "solana"}, 400, "unknown_network", "network"),
    ("asset not on that network", {"asset": "BTC", "currency": "BTC"}, 400, "asset_not_on_network", "asset"),
    ("asset without network", {"network": None}, 400, "parameter_missing", "network"),
    (
        "unknown currency",
        {"currency": "XYZ", "asset": None, "network": None},
        400,
        "unknown_currency",
        "currency",
    ),
    ("currency other than the asset", {"currency": "ETH"}, 400, "currency_asset_mismatch", "currency"),
    ("unknown parameter", {"colour": "red"}, 400, "unknown_parameter", "colour"),
    ("metadata not an object", {"metadata": ["a"]}, 400, "invalid_metadata", "metadata"),
    (
        "metadata over 50 keys",
        {"metadata": {f"k{i}": "v" for i in range(51)}},
        400,
        "metadata_too_many_keys",
        "metadata",
    ),
    ("metadata over 16 KB", {"metadata": {"blob": "x" * 16_400}}, 400, "metadata_too_large", "metadata"),
    ("bad success_url", {"success_url": "javascript:alert(1)"}, 400, "invalid_parameter", "success_url"),
    ("expiry out of range", {"expires_in_minutes": 0}, 400, "min_value", "expires_in_minutes"),
    ("order id too long", {"merchant_order_id": "x" * 201}, 400, "parameter_too_long", "merchant_order_id"),
]


def body_with(changes: dict) -> dict:
    body = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(("name", "changes", "status", "code", "param"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_with_a_stable_code_and_writes_nothing(api, name, changes, status, code, param):
    before = tables()
    response = api.post(
        "/api/v1/payment-intents", body_with(changes), format="json", HTTP_IDEMPOTENCY_KEY=name
    )
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    assert tables() == before


def test_disabled_network_and_disabled_asset(api):
    before = tables()
    NetworkAsset.objects.filter(asset__code="USDC", network__code="ethereum").update(enabled=False)
    response = api.post("/api/v1/payment-intents", GOOD, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "asset_disabled")
    network = network_asset_resolve(asset_code="ETH", network_code="base").network
    network.enabled = False
    network.save()
    response = api.post("/api/v1/payment-intents", GOOD | {"network": "base"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "network_disabled")
    assert tables() == before


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "invalid_json"),
        ("[1, 2]", "application/json", 400, "invalid_body"),
        ("amount=10", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_non_json_body(api, content, content_type, status, code):
    before = tables()
    response = api.generic("POST", "/api/v1/payment-intents", content, content_type=content_type)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert tables() == before


def test_idempotency_key_reused_with_another_body_writes_nothing(api):
    first = api.post("/api/v1/payment-intents", GOOD, format="json", HTTP_IDEMPOTENCY_KEY="reuse")
    assert first.status_code == 201
    before = tables()
    response = api.post(
        "/api/v1/payment-intents", GOOD | {"amount": "11.00"}, format="json", HTTP_IDEMPOTENCY_KEY="reuse"
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert tables() == before


def test_a_failed_request_does_not_burn_its_idempotency_key(api):
    bad = api.post(
        "/api/v1/payment-intents", GOOD | {"amount": "-1"}, format="json", HTTP_IDEMPOTENCY_KEY="retry"
    )
    assert bad.status_code == 400
    good = api.post("/api/v1/payment-intents", GOOD, format="json", HTTP_IDEMPOTENCY_KEY="retry")
    assert good.status_code == 201


def test_invalid_idempotency_key(api):
    response = api.post("/api/v1/payment-intents", GOOD, format="json", HTTP_IDEMPOTENCY_KEY="x" * 300)
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert PaymentIntent.objects.count() == 0


def test_merchant_without_wallet_for_the_chain(db):
    from rest_framework.test import APIClient

    from tests.factories import make_api_key

    merchant = make_merchant("No wallets", wallets=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(merchant)[1]}")
    before = tables()
    response = client.post("/api/v1/payment-intents", GOOD, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "no_wallet_for_network")
    assert tables() == before
    assert Wallet.objects.filter(merchant=merchant).count() == 0


@pytest.mark.parametrize(
    ("xpub", "code"),
    [
        ("not-a-key", "invalid_xpub"),
        (
            "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATx",
            "invalid_xpub",
        ),
        (
            "xprv9s21ZrQH143K3GJpoapnV8SFfukcVBSfeCficPSGfubmSFDxo1kuHnLisriDvSnRRuL2Qrg5ggqHKNVpxR86QEC8w35uxmGoggxtQTPvfUu",
            "private_key_rejected",
        ),
    ],
)
def test_malformed_xpub_is_refused_with_a_code(merchant, xpub, code):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    before = Wallet.objects.count()
    with pytest.raises(CommandError, match=code):
        call_command(
            "add_wallet", merchant.pk, "--chain", "bitcoin", "--xpub", xpub, "--network", "bitcoin-testnet"
        )
    assert Wallet.objects.count() == before


def test_error_body_shape_is_stable(api):
    response = api.post("/api/v1/payment-intents", json.dumps({}), content_type="application/json")
    assert set(response.json()["error"]) == {"code", "message", "param"}

"""Input no part of the gateway can store (NUL bytes, lone surrogates, deep nesting), the errors Django
answers itself under /api/ (unknown paths, oversized bodies, crashes) and loose values (an amount with a
trailing newline, return URLs that are not https): each a 4xx or 5xx with the API's JSON error envelope
and a stable code, and nothing written.

Each of these answered a 500 or HTML (or was accepted) before the edge checks."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from payments.models import Event, IdempotencyRecord, PaymentIntent, StateTransition
from payments.webhooks.endpoints import endpoint_create

pytestmark = pytest.mark.django_db

GOOD = {"amount": "0.01", "currency": "ETH", "asset": "ETH", "network": "evm-local"}


def tables() -> list[int]:
    return [m.objects.count() for m in (PaymentIntent, StateTransition, Event, IdempotencyRecord)]


def envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def webhook_api(merchant):
    from rest_framework.test import APIClient

    from tests.factories import make_api_key

    client = APIClient()
    key = make_api_key(
        merchant, scopes=("payments:read", "payments:write", "webhooks:read", "webhooks:write")
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key[1]}")
    return client


NUL_PATHS = [
    "/pay/%00",
    "/pay/%00/status",
    "/api/v1/payment-intents/%00",
    "/api/v1/payment-intents/pi_%00/cancel",
    "/api/v1/webhook-endpoints/%00",
    "/api/v1/webhook-endpoints/we_%00/deliveries",
    "/api/v1/events/%00",
    "/api/v1/events?payment_intent=%00",
    "/api/v1/events?after=%00",
    "/api/v1/events?type=%00",
    "/api/v1/payment-intents?merchant_order_id=%00",
    "/api/v1/payment-intents?customer_id=a%00b",
    "/api/v1/webhook-endpoints/we_x/deliveries?cursor=%00",
    "/api/v1/payment-intents?%00=1",
]


@pytest.mark.parametrize("url", NUL_PATHS)
def test_a_nul_byte_in_a_path_or_query_is_a_400_with_the_envelope(webhook_api, url):
    before = tables()
    error = envelope(webhook_api.get(url), 400, "invalid_characters")
    assert tables() == before
    assert error["message"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/payment-intents/pi_%ED%A0%80",  # an encoded lone surrogate: not UTF-8
        "/api/v1/payment-intents/pi_'%20OR%201=1",
        "/api/v1/events/evt_%22x",
        "/api/v1/webhook-endpoints/" + "w" * 65,
    ],
)
def test_an_id_that_cannot_be_an_id_is_a_404_with_the_envelope(webhook_api, url):
    envelope(webhook_api.get(url), 404, "not_found")


def test_a_checkout_token_that_cannot_be_a_token_is_a_404(client):
    assert client.get("/pay/a%20b").status_code == 404
    assert client.get("/pay/" + "t" * 65).status_code == 404


RAW_BODIES = [
    ("NUL in metadata", '{"metadata": {"note": "a\\u0000b"}}', "invalid_characters"),
    ("NUL in a metadata key", '{"metadata": {"a\\u0000": "b"}}', "invalid_characters"),
    ("lone surrogate in metadata", '{"metadata": {"note": "\\ud800"}}', "invalid_characters"),
    ("lone low surrogate", '{"merchant_order_id": "\\udc00x"}', "invalid_characters"),
    ("NUL in order id", '{"merchant_order_id": "1\\u0000"}', "invalid_characters"),
    ("nesting 1000 deep", '{"metadata": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}", "nesting_too_deep"),
    (
        "nesting 1000 deep in lists",
        '{"metadata": {"a": ' + "[" * 1000 + "]" * 1000 + "}}",
        "nesting_too_deep",
    ),
    ("nesting 40 deep", '{"metadata": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", "nesting_too_deep"),
    ("nesting 100000 deep", '{"metadata": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}", "nesting_too_deep"),
    ("a repeated key", '{"metadata": {"a": 1, "a": 2}}', "duplicate_key"),
    ("NaN", '{"metadata": {"a": NaN}}', "invalid_json"),
]


@pytest.mark.parametrize(("name", "changes", "code"), RAW_BODIES, ids=[b[0] for b in RAW_BODIES])
def test_unstorable_or_deep_bodies_are_a_400_and_write_nothing(api, name, changes, code):
    assert len(changes) < 250_000  # well under the body size limit: the depth alone is refused
    good = ", ".join(f'"{k}": "{v}"' for k, v in GOOD.items())
    body = "{" + good + ", " + changes[1:]
    before = tables()
    response = api.generic(
        "POST", "/api/v1/payment-intents", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=name
    )
    envelope(response, 400, code)
    assert tables() == before


def test_brackets_inside_strings_do_not_count_as_nesting(api):
    metadata = {"note": "[" * 100 + "{" * 100 + '\\"' + "]" * 50, "deep": [[[[["ok"]]]]]}
    response = api.post("/api/v1/payment-intents", GOOD | {"metadata": metadata}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == metadata


def test_a_body_nested_past_the_interpreters_recursion_limit_is_refused_not_a_crash(api):
    """Before: the depth was left to the C parser, whose guard follows the recursion limit, which web3
    (py_ecc) raises to 100,000 when imported: a deep enough body crashed the process."""
    import sys

    import web3  # noqa: F401 (raises the recursion limit, as the scanner's processes do)

    assert sys.getrecursionlimit() >= 100_000
    body = '{"amount": "1", "currency": "ETH", "metadata": {"a": ' + "[" * 200_000 + "]" * 200_000 + "}}"
    response = api.generic("POST", "/api/v1/payment-intents", body, content_type="application/json")
    envelope(response, 400, "nesting_too_deep")


def test_ordinary_nesting_and_unicode_are_accepted(api):
    metadata = {"cart": [{"sku": "Ü-1", "opts": {"size": "M", "tags": ["ß", "✓", "😀"]}}]}
    response = api.post("/api/v1/payment-intents", GOOD | {"metadata": metadata}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == metadata


def test_webhook_endpoint_with_a_nul_in_its_description_is_refused(webhook_api):
    response = webhook_api.generic(
        "POST",
        "/api/v1/webhook-endpoints",
        '{"url": "https://example.com/hook", "description": "x\\u0000"}',
        content_type="application/json",
    )
    envelope(response, 400, "invalid_characters")


def test_an_unknown_api_path_is_a_json_404(api):
    envelope(api.get("/api/v1/no-such-thing"), 404, "not_found")
    envelope(api.get("/api/v2/payment-intents"), 404, "not_found")
    envelope(api.post("/api/nothing", {}, format="json"), 404, "not_found")


def test_outside_the_api_a_404_stays_a_page(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and not response["Content-Type"].startswith("application/json")


def test_a_body_over_the_size_limit_is_a_json_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = '{"amount": "1", "currency": "ETH", "metadata": {"blob": "' + "x" * 70_000 + '"}}'
    before = tables()
    response = api.generic("POST", "/api/v1/payment-intents", body, content_type="application/json")
    envelope(response, 413, "request_too_large")
    assert tables() == before


def test_a_crash_under_the_api_is_a_json_500(api, monkeypatch):
    from payments.api import views

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "intent_queryset", crash)
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=api._credentials["HTTP_AUTHORIZATION"])
    error = envelope(client.get("/api/v1/payment-intents"), 500, "internal_error")
    assert "a bug" not in error["message"]  # no internals in the answer


LOOSE = [
    ("amount with a trailing newline", {"amount": "1\n"}, "invalid_amount", "amount"),
    ("amount with a leading newline", {"amount": "\n1"}, "invalid_amount", "amount"),
    ("ftp success_url", {"success_url": "ftp://shop.example/thanks"}, "insecure_return_url", "success_url"),
    ("ftp cancel_url", {"cancel_url": "ftp://shop.example/cart"}, "insecure_return_url", "cancel_url"),
    ("http success_url", {"success_url": "http://shop.example/thanks"}, "insecure_return_url", "success_url"),
    ("http to localhost", {"cancel_url": "http://127.0.0.1:8000/cart"}, "insecure_return_url", "cancel_url"),
]


@pytest.mark.parametrize(("name", "changes", "code", "param"), LOOSE, ids=[c[0] for c in LOOSE])
def test_loose_values_are_refused(api, name, changes, code, param):
    before = tables()
    error = envelope(api.post("/api/v1/payment-intents", GOOD | changes, format="json"), 400, code)
    assert error["param"] == param
    assert tables() == before


def test_http_return_urls_only_to_loopback_and_only_when_allowed(api, settings):
    settings.GATEWAY_RETURN_URL_ALLOW_HTTP = True
    local = {"success_url": "http://127.0.0.1:8000/thanks", "cancel_url": "http://localhost/cart"}
    assert api.post("/api/v1/payment-intents", GOOD | local, format="json").status_code == 201
    remote = api.post(
        "/api/v1/payment-intents", GOOD | {"success_url": "http://shop.example/"}, format="json"
    )
    envelope(remote, 400, "insecure_return_url")
    https = {"success_url": "https://shop.example/thanks", "cancel_url": "https://shop.example/cart"}
    assert api.post("/api/v1/payment-intents", GOOD | https, format="json").status_code == 201


def test_the_nul_guard_leaves_endpoints_alone(webhook_api, merchant, settings):
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    endpoint, _ = endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook", now=timezone.now())
    assert webhook_api.get(f"/api/v1/webhook-endpoints/{endpoint.pk}").status_code == 200


@pytest.mark.parametrize("path", ["/admin/", "/admin/login/", "/pay/abc"])
def test_a_cookie_with_a_nul_is_dropped_not_a_500(path):
    """Before: a forged session id with a NUL reached PostgreSQL and answered 500."""
    client = Client(raise_request_exception=False)
    response = client.get(path, HTTP_COOKIE='sessionid="\\000abcdefghij"; csrftoken="a\\000b"')
    assert response.status_code in (200, 302, 404), response.status_code


def test_with_debug_on_as_in_the_demo_api_errors_keep_the_envelope(api, settings):
    """The demo runs with DEBUG on, where Django answers unknown paths and oversized bodies with its own
    debug pages (before: HTML under /api/ in the demo)."""
    settings.DEBUG = True
    envelope(api.get("/api/v1/no-such-thing"), 404, "not_found")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = '{"amount": "1", "currency": "ETH", "metadata": {"blob": "' + "x" * 70_000 + '"}}'
    response = api.generic("POST", "/api/v1/payment-intents", body, content_type="application/json")
    envelope(response, 413, "request_too_large")
    assert api.get("/api/v1/payment-intents/pi_missing").json()["error"]["code"] in (
        "not_found",
        "intent_not_found",
    )

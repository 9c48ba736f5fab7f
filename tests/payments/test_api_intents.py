"""The merchant API: create, retrieve, list, cancel, choose asset; auth, scopes and tenancy."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from payments import services
from payments.chains.base import Transfer
from payments.models import Event, IdempotencyRecord, PaymentIntent, StateTransition
from tests.factories import BIP84_FIRST_ADDRESS, ETH_FIRST_ADDRESS, make_api_key, make_merchant

pytestmark = pytest.mark.django_db


def create(api, **body):
    payload = {"amount": "0.001", "currency": "BTC", "asset": "BTC", "network": "bitcoin"} | body
    return api.post("/api/v1/payment-intents", payload, format="json")


def test_create_crypto_priced_intent_assigns_address_and_awaits_payment(api):
    response = create(api, merchant_order_id="order-1", metadata={"cart": "42"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"].startswith("pi_")
    assert body["state"] == "awaiting_payment"
    assert body["asset"] == "BTC" and body["network"] == "bitcoin"
    assert body["address"] == BIP84_FIRST_ADDRESS
    assert body["amount_due"] == {"value": "0.00100000", "base_units": "100000"}
    assert body["amount_seen"] == {"value": "0.00000000", "base_units": "0"}
    assert body["required_confirmations"] == 2
    assert body["payment_uri"] == f"bitcoin:{BIP84_FIRST_ADDRESS}?amount=0.00100000"
    assert body["checkout_url"].startswith("http") and "/pay/" in body["checkout_url"]
    assert body["metadata"] == {"cart": "42"}
    intent = PaymentIntent.objects.get(pk=body["id"])
    assert [(t.from_state, t.to_state) for t in intent.transitions.all()] == [("created", "awaiting_payment")]
    assert list(intent.events.order_by("sequence").values_list("type", "sequence")) == [
        ("payment.created", 1),
        ("payment.awaiting_payment", 2),
    ]
    # the answer is the snapshot of the latest event, and what a retrieve shows
    assert body == intent.events.get(sequence=2).payload
    assert api.get(f"/api/v1/payment-intents/{intent.pk}").json() == body


def test_a_create_stores_its_events_transition_and_answer_as_the_services_write_them_later(api, merchant):
    """The create writes its rows in one statement, its events' payloads from one snapshot parameter:
    each reads back as `event_row` and `events_write` build them for every later event."""
    response = api.post(
        "/api/v1/payment-intents",
        {"amount": "0.001", "currency": "BTC", "asset": "BTC", "network": "bitcoin", "metadata": {"k": [1]}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="rows-1",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    intent = PaymentIntent.objects.get(pk=body["id"])
    created, moved = intent.events.order_by("sequence")
    assert created.payload == body | {"state": "created", "sequence": 1}
    assert moved.payload == body | {"sequence": 2}
    assert (created.type, created.dedupe_key, created.transition_id) == ("payment.created", "created", None)
    transition = intent.transitions.get()
    assert (moved.type, moved.transition_id) == ("payment.awaiting_payment", transition.pk)
    assert moved.dedupe_key == f"transition:{transition.pk}"
    assert created.merchant_id == moved.merchant_id == merchant.pk
    assert created.created_at == moved.created_at == transition.created_at == intent.created_at
    assert created.position is None and moved.position is None  # not yet dispatched
    assert transition.verdict["state"] == "awaiting_payment" and transition.reason
    assert len(transition.cause) == 64
    record = IdempotencyRecord.objects.get(merchant=merchant, key="rows-1")
    assert (record.response_status, record.response_body) == (201, body)


def test_erc20_intent_has_eip681_transfer_uri(api):
    body = create(api, amount="49.5", currency="USDC", asset="USDC", network="ethereum").json()
    assert body["address"] == ETH_FIRST_ADDRESS
    assert body["amount_due"]["base_units"] == "49500000"
    assert body["payment_uri"] == (
        "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48@1/transfer"
        f"?address={ETH_FIRST_ADDRESS}&uint256=49500000"
    )


def test_fiat_priced_stablecoin_uses_peg_quote(api):
    body = create(api, amount="49.00", currency="USD", asset="USDT", network="polygon").json()
    assert body["amount_due"] == {"value": "49.000000", "base_units": "49000000"}
    assert body["quote"]["rate"] == "1" and body["quote"]["source"].startswith("peg:")
    assert body["required_confirmations"] == 64


def test_intent_without_asset_is_created_then_asset_chosen(api):
    body = api.post("/api/v1/payment-intents", {"amount": "10", "currency": "USD"}, format="json").json()
    assert body["state"] == "created" and body["address"] is None and body["amount_due"] is None
    response = api.post(
        f"/api/v1/payment-intents/{body['id']}/select-asset",
        {"asset": "USDC", "network": "base"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    chosen = response.json()
    assert chosen["state"] == "awaiting_payment"
    assert chosen["amount_due"]["base_units"] == "10000000"
    again = api.post(
        f"/api/v1/payment-intents/{body['id']}/select-asset",
        {"asset": "USDC", "network": "base"},
        format="json",
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "intent_asset_already_chosen"


def test_retrieve_and_list_with_filters_and_cursor(api):
    ids = [create(api, merchant_order_id=f"o-{i}").json()["id"] for i in range(5)]
    assert api.get(f"/api/v1/payment-intents/{ids[0]}").json()["id"] == ids[0]
    page = api.get("/api/v1/payment-intents?limit=2").json()
    assert [i["id"] for i in page["data"]] == ids[::-1][:2]
    seen = [i["id"] for i in page["data"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [i["id"] for i in page["data"]]
    assert seen == ids[::-1]
    only = api.get("/api/v1/payment-intents?merchant_order_id=o-3").json()["data"]
    assert [i["id"] for i in only] == [ids[3]]
    assert len(api.get("/api/v1/payment-intents?state=awaiting_payment").json()["data"]) == 5
    assert api.get("/api/v1/payment-intents?state=paid").json()["data"] == []
    assert api.get("/api/v1/payment-intents?state=nonsense").status_code == 400
    assert api.get("/api/v1/payment-intents?created_gte=2999-01-01T00:00:00Z").json()["data"] == []


def test_cancel_expires_an_unpaid_intent(api):
    intent_id = create(api).json()["id"]
    response = api.post(f"/api/v1/payment-intents/{intent_id}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "expired"
    assert response.json()["canceled_at"]
    again = api.post(f"/api/v1/payment-intents/{intent_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "intent_not_cancelable"


def test_another_merchants_intent_is_404(api):
    other = make_merchant("Other", account=1)
    _, secret = make_api_key(other)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    theirs = create(client).json()["id"]
    assert api.get(f"/api/v1/payment-intents/{theirs}").status_code == 404
    assert api.post(f"/api/v1/payment-intents/{theirs}/cancel").status_code == 404
    assert theirs not in [i["id"] for i in api.get("/api/v1/payment-intents").json()["data"]]


def test_key_without_scope_is_403(merchant):
    _, secret = make_api_key(merchant, scopes=["payments:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = create(client)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "missing_scope"
    assert client.get("/api/v1/payment-intents").status_code == 200
    assert PaymentIntent.objects.count() == 0


def test_revoked_key_is_401(merchant):
    from django.utils import timezone

    from payments.accounts import api_key_revoke

    key, secret = make_api_key(merchant)
    api_key_revoke(api_key=key, now=timezone.now())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.get("/api/v1/payment-intents")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_missing_or_unknown_key_is_401(db):
    client = APIClient()
    assert client.get("/api/v1/payment-intents").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer gwk_nope")
    response = client.get("/api/v1/payment-intents")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_key_last_used_is_recorded(merchant):
    key, secret = make_api_key(merchant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    client.get("/api/v1/payment-intents")
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_idempotent_replay_and_reuse_with_other_body(api):
    first = api.post(
        "/api/v1/payment-intents",
        {"amount": "0.001", "currency": "BTC", "asset": "BTC", "network": "bitcoin"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    again = api.post(
        "/api/v1/payment-intents",
        {"network": "bitcoin", "asset": "BTC", "currency": "BTC", "amount": "0.001"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    other = api.post(
        "/api/v1/payment-intents",
        {"amount": "0.002", "currency": "BTC", "asset": "BTC", "network": "bitcoin"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert PaymentIntent.objects.count() == 1
    assert StateTransition.objects.count() == 1 and Event.objects.count() == 2


def test_openapi_schema_and_docs_page(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/payment-intents" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_an_api_key_over_its_rate_gets_429(api, settings, monkeypatch):
    from django.core.cache import cache

    from payments import ratelimit

    cache.clear()
    monkeypatch.setattr(ratelimit.time, "time", lambda: 1_800_000_000.5)  # one window for the whole test
    settings.GATEWAY_API_RATE_PER_SECOND = 3
    responses = [api.get("/api/v1/payment-intents") for _ in range(5)]
    refused = [r for r in responses if r.status_code == 429]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert refused[0].json()["error"]["code"] == "rate_limited" and int(refused[0]["Retry-After"]) >= 1
    cache.clear()


def test_underpaid_bitcoin_intent_gives_a_bip21_uri_for_what_is_left(api):
    body = create(api).json()  # 0.001 BTC = 100000 sat
    assert body["amount_remaining"] is None and body["payment_uri_remaining"] is None
    now = timezone.now()
    services.chain_tip_record(network_code="bitcoin", height=801, block_hash="0xb801", now=now)
    services.observation_record(
        transfer=Transfer(
            network_code="bitcoin",
            tx_hash="ab" * 32,
            output_index=1,
            address=body["address"],
            amount_base_units=40_000,
            block_height=800,
            block_hash="0xb800",
            block_time=now - timedelta(minutes=1),
            position_in_block=3,
        ),
        now=now,
    )
    body = api.get(f"/api/v1/payment-intents/{body['id']}").json()
    assert body["state"] == "underpaid"
    assert body["amount_remaining"] == {"value": "0.00060000", "base_units": "60000"}
    # BIP21: bitcoin:<address>?amount=<decimal BTC>
    uri = urlsplit(body["payment_uri_remaining"])
    assert uri.scheme == "bitcoin" and uri.path == BIP84_FIRST_ADDRESS
    assert Decimal(parse_qs(uri.query, strict_parsing=True)["amount"][0]) * 10**8 == 100_000 - 40_000
    assert body["payment_uri"] == f"bitcoin:{BIP84_FIRST_ADDRESS}?amount=0.00100000"


def underpay(body: dict) -> None:
    """40000 of the 100000 sat due, confirmed: underpaid."""
    now = timezone.now()
    services.chain_tip_record(network_code="bitcoin", height=801, block_hash="0xb801", now=now)
    services.observation_record(
        transfer=Transfer(
            network_code="bitcoin",
            tx_hash=body["id"][-8:].encode().hex().ljust(64, "0"),
            output_index=0,
            address=body["address"],
            amount_base_units=40_000,
            block_height=800,
            block_hash="0xb800",
            block_time=now,
            position_in_block=0,
        ),
        now=now,
    )


def test_payment_deadline_is_the_expiry_until_a_top_up_moves_it_in_retrieve_and_list(api):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    bodies = [create(api).json() for _ in range(2)]
    assert [b["payment_deadline"] for b in bodies] == [b["expires_at"] for b in bodies]
    underpay(bodies[0])
    until = (timezone.now() + timedelta(hours=30)).replace(microsecond=0)
    services.resolution_record(
        intent_id=bodies[0]["id"],
        kind="extend_deadline",
        actor=None,
        role="support_agent",
        reason="The customer will send the rest tomorrow morning.",
        now=timezone.now(),
        until=until,
    )
    shown = api.get(f"/api/v1/payment-intents/{bodies[0]['id']}").json()
    assert shown["payment_deadline"] == until.isoformat() != shown["expires_at"]
    listed = {i["id"]: i["payment_deadline"] for i in api.get("/api/v1/payment-intents").json()["data"]}
    assert listed == {bodies[0]["id"]: until.isoformat(), bodies[1]["id"]: bodies[1]["expires_at"]}
    # the list reads the deadlines in one query, however many intents it shows
    with CaptureQueriesContext(connection) as two:
        api.get("/api/v1/payment-intents")
    for _ in range(4):
        create(api)
    with CaptureQueriesContext(connection) as six:
        assert len(api.get("/api/v1/payment-intents").json()["data"]) == 6
    assert len(six.captured_queries) == len(two.captured_queries)

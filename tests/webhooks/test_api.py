"""The merchant API for webhook endpoints, the delivery log, replay and the events catch-up list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from payments.models import Event, WebhookDelivery, WebhookEndpoint, WebhookSecret
from payments.webhooks.delivery import deliver_due, events_dispatch
from tests.factories import make_api_key, make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db
ALL_SCOPES = ("payments:read", "payments:write", "webhooks:read", "webhooks:write")


def client_for(merchant, scopes=ALL_SCOPES) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(merchant, scopes)[1]}")
    return client


@pytest.fixture
def shop():
    return make_merchant()


@pytest.fixture
def api(shop):
    return client_for(shop)


def add_endpoint(api, url, **body):
    response = api.post("/api/v1/webhook-endpoints", {"url": url, **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_endpoint_lifecycle_and_the_secret_shown_once(api, receiver):
    created = add_endpoint(api, receiver.url, event_types=["payment.paid"], description="orders")
    assert created["secret"].startswith("whsec_") and created["id"].startswith("we_")
    assert created["event_types"] == ["payment.paid"] and created["enabled"] is True
    shown = api.get(f"/api/v1/webhook-endpoints/{created['id']}").json()
    assert "secret" not in shown and shown["url"] == receiver.url
    assert [e["id"] for e in api.get("/api/v1/webhook-endpoints").json()["data"]] == [created["id"]]
    patched = api.patch(
        f"/api/v1/webhook-endpoints/{created['id']}", {"enabled": False, "event_types": []}, format="json"
    ).json()
    assert patched["enabled"] is False and patched["disabled_reason"] == "merchant"
    assert patched["event_types"] == []
    again = api.patch(f"/api/v1/webhook-endpoints/{created['id']}", {"enabled": True}, format="json").json()
    assert again["enabled"] is True and again["disabled_reason"] is None
    assert api.delete(f"/api/v1/webhook-endpoints/{created['id']}").status_code == 204
    assert api.get(f"/api/v1/webhook-endpoints/{created['id']}").status_code == 404
    assert WebhookEndpoint.objects.get().deleted_at is not None  # its log stays


def test_rotation_over_the_api_signs_with_both_secrets(api, shop, receiver):
    created = add_endpoint(api, receiver.url, event_types=["payment.created"])
    rotated = api.post(
        f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret", {"overlap_hours": 2}, format="json"
    ).json()
    assert rotated["secret"] != created["secret"]
    new_intent(shop)
    deliver_due(now=timezone.now())
    (request,) = receiver.received
    Webhook(created["secret"]).verify(request.body, request.headers)
    Webhook(rotated["secret"]).verify(request.body, request.headers)
    (old,) = [
        s for s in WebhookSecret.objects.filter(endpoint_id=created["id"]) if s.secret == created["secret"]
    ]
    assert timedelta(hours=1, minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=2)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "https://10.0.0.1/x"}, 400, "webhook_url_refused"),
        ({"url": "https://169.254.169.254/"}, 400, "webhook_url_refused"),
        ({"url": "not a url"}, 400, "webhook_url_refused"),
        ({"url": "https://93.184.215.14/x", "event_types": ["payment.nope"]}, 400, "unknown_event_type"),
        ({"url": "https://93.184.215.14/x", "event_types": "payment.paid"}, 400, "not_a_list"),
        ({"url": "https://93.184.215.14/x", "secret": "whsec_x"}, 400, "unknown_parameter"),
        ({}, 400, "parameter_missing"),
    ],
)
def test_bad_endpoint_input_is_a_4xx_with_a_stable_code_and_no_row(api, settings, body, status, code):
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = []
    response = api.post("/api/v1/webhook-endpoints", body, format="json")
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert not WebhookEndpoint.objects.exists()


def test_scopes_and_other_merchants(shop, receiver):
    payments_only = client_for(shop, ("payments:read", "payments:write"))
    response = payments_only.get("/api/v1/webhook-endpoints")
    assert response.status_code == 403 and response.json()["error"]["code"] == "missing_scope"
    read_only = client_for(shop, ("webhooks:read",))
    assert (
        read_only.post("/api/v1/webhook-endpoints", {"url": receiver.url}, format="json").status_code == 403
    )
    endpoint = add_endpoint(client_for(shop), receiver.url)
    new_intent(shop)
    events_dispatch(now=timezone.now())
    event = Event.objects.first()
    other = client_for(make_merchant("Other", account=1))
    assert other.get(f"/api/v1/webhook-endpoints/{endpoint['id']}").status_code == 404
    assert other.get(f"/api/v1/events/{event.id}").status_code == 404
    assert other.post(f"/api/v1/events/{event.id}/redeliver", {}, format="json").status_code == 404
    assert other.get("/api/v1/events").json()["data"] == []


def test_catch_up_pages_through_every_event_oldest_first(api, shop):
    intents = [new_intent(shop) for _ in range(3)]
    assert api.get("/api/v1/events").json()["data"] == [], "not dispatched yet"
    events_dispatch(now=timezone.now())
    seen, url = [], "/api/v1/events?limit=2"
    while url:
        page = api.get(url).json()
        seen += page["data"]
        url = page["next"]
        assert page["has_more"] == (url is not None)
    assert len(seen) == 6
    assert {e["id"] for e in seen} == set(Event.objects.values_list("id", flat=True))
    for intent in intents:
        sequences = [e["data"]["sequence"] for e in seen if e["data"]["id"] == intent.id]
        assert sequences == [1, 2]
    # resuming after the last event processed gives only newer ones
    last = seen[-1]["id"]
    assert api.get(f"/api/v1/events?after={last}").json()["data"] == []
    newer = new_intent(shop)
    events_dispatch(now=timezone.now())
    resumed = api.get(f"/api/v1/events?after={last}").json()["data"]
    assert [e["data"]["id"] for e in resumed] == [newer.id, newer.id]
    only = api.get("/api/v1/events?type=payment.created").json()["data"]
    assert {e["type"] for e in only} == {"payment.created"} and len(only) == 4
    both = api.get("/api/v1/events?type=payment.created,payment.awaiting_payment&limit=100").json()
    assert len(both["data"]) == 8
    mine = api.get(f"/api/v1/events?payment_intent={newer.id}").json()["data"]
    assert [e["type"] for e in mine] == ["payment.created", "payment.awaiting_payment"]
    assert api.get(f"/api/v1/events/{last}").json()["id"] == last


def test_a_merchant_cannot_undo_an_operators_disable(api, shop, receiver):
    from payments.webhooks import endpoints

    created = add_endpoint(api, receiver.url)
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    endpoints.endpoint_disable(endpoint=endpoint, reason="operator", now=timezone.now())
    response = api.patch(f"/api/v1/webhook-endpoints/{endpoint.pk}", {"enabled": True}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "endpoint_disabled_by_operator"
    assert not WebhookEndpoint.objects.get(pk=endpoint.pk).enabled


def test_a_bad_cursor_is_a_400(api, receiver):
    created = add_endpoint(api, receiver.url)
    for url in (
        f"/api/v1/webhook-endpoints/{created['id']}/deliveries?cursor=nope",
        "/api/v1/payment-intents?cursor=nope",
    ):
        response = api.get(url)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("query", "code"),
    [("after=evt_nope", "invalid_cursor"), ("type=payment.nope", "unknown_event_type"), ("limit=x", None)],
)
def test_bad_event_queries(api, query, code):
    response = api.get(f"/api/v1/events?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == (code or "invalid_parameter")


def test_redeliver_and_the_delivery_log_over_the_api(api, shop, receiver):
    endpoint = add_endpoint(api, receiver.url, event_types=["payment.created"])
    new_intent(shop)
    receiver.answers.append(500)
    t = timezone.now()
    deliver_due(now=t)
    deliver_due(now=t + timedelta(seconds=5))
    event = Event.objects.get(type="payment.created")
    log = api.get(f"/api/v1/events/{event.id}/deliveries").json()["data"]
    assert len(log) == 1 and log[0]["state"] == "delivered" and log[0]["attempts"] == 2
    assert [(a["number"], a["status_code"], a["outcome"]) for a in log[0]["attempt_log"]] == [
        (1, 500, "failed"),
        (2, 200, "succeeded"),
    ]
    assert log[0]["attempt_log"][0]["error"] == "HTTP 500"
    queued = api.post(
        f"/api/v1/events/{event.id}/redeliver",
        {"endpoint_id": endpoint["id"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="redeliver-1",
    )
    assert queued.status_code == 202 and queued.json()["data"][0]["kind"] == "replay"
    repeat = api.post(
        f"/api/v1/events/{event.id}/redeliver",
        {"endpoint_id": endpoint["id"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="redeliver-1",
    )
    assert repeat.json() == queued.json(), "the same key queues once"
    deliver_due(now=timezone.now())
    assert receiver.ids() == [event.id] * 3
    per_endpoint = api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()["data"]
    assert [d["kind"] for d in per_endpoint] == ["replay", "original"]
    assert WebhookDelivery.objects.filter(kind="replay").get().requested_by.startswith("api:")


def test_bulk_replay_over_the_api(api, shop, receiver):
    endpoint = add_endpoint(api, receiver.url, event_types=["payment.created"])
    for _ in range(3):
        new_intent(shop)
    deliver_due(now=timezone.now())
    body = {"since": (timezone.now() - timedelta(hours=1)).isoformat(), "until": timezone.now().isoformat()}
    response = api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/replay", body, format="json")
    assert response.status_code == 202 and response.json() == {"queued": 3}
    deliver_due(now=timezone.now())
    assert len(receiver.received) == 6
    reversed_range = {"since": body["until"], "until": body["since"]}
    bad = api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/replay", reversed_range, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_range"

"""Merchants report fulfilment over the API (`POST /payment-intents/{id}/fulfilment`): once, only for a
paid intent, with an event `payment.fulfilled`, never changing the payment's state; so "paid but not
fulfilled" is something support can list."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from payments import services
from payments.models import PaymentIntent
from tests.factories import make_api_key, make_merchant
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db


def paid_intent(merchant) -> PaymentIntent:
    now = timezone.now()
    intent = new_intent(merchant, now=now)
    services.observation_record(transfer=transfer(intent, **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=140, block_hash="0xb140", now=now)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "paid"
    return intent


def fulfil(api, intent_id: str, body=None, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post(f"/api/v1/payment-intents/{intent_id}/fulfilment", body or {}, format="json", **headers)


def test_a_paid_intent_is_fulfilled_once_with_one_event(api, merchant):
    intent = paid_intent(merchant)
    response = fulfil(api, intent.pk, {"reference": "DHL 00340434"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "paid" and body["fulfilment_reference"] == "DHL 00340434"
    assert body["fulfilled_at"] is not None
    event = intent.events.get(type="payment.fulfilled")
    assert (
        event.payload["fulfilled_at"] == body["fulfilled_at"] and event.payload["sequence"] == event.sequence
    )
    # again (a retry without a key, or with the same reference): the same answer, no second event
    again = fulfil(api, intent.pk, {"reference": "DHL 00340434"})
    assert again.status_code == 200 and again.json()["fulfilled_at"] == body["fulfilled_at"]
    assert fulfil(api, intent.pk).status_code == 200
    assert intent.events.filter(type="payment.fulfilled").count() == 1
    # another reference contradicts the first report
    other = fulfil(api, intent.pk, {"reference": "UPS 1Z999"})
    assert (other.status_code, other.json()["error"]["code"]) == (409, "intent_already_fulfilled")
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"
    listed = api.get(f"/api/v1/payment-intents/{intent.pk}").json()
    assert listed["fulfilled_at"] == body["fulfilled_at"]


def test_an_unpaid_intent_cannot_be_fulfilled(api, merchant):
    intent = new_intent(merchant)
    response = fulfil(api, intent.pk)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "intent_not_paid")
    assert PaymentIntent.objects.get(pk=intent.pk).fulfilled_at is None
    assert not intent.events.filter(type="payment.fulfilled").exists()


def test_fulfilment_is_idempotent_by_key_and_needs_the_write_scope(api, merchant):
    intent = paid_intent(merchant)
    first = fulfil(api, intent.pk, {"reference": "r1"}, key="ship-1")
    replay = fulfil(api, intent.pk, {"reference": "r1"}, key="ship-1")
    assert replay["Idempotent-Replayed"] == "true" and replay.json() == first.json()
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(merchant, scopes=('payments:read',))[1]}")
    refused = fulfil(reader, intent.pk)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "missing_scope")


def test_another_merchants_intent_is_not_found(api):
    other = paid_intent(make_merchant("Other shop", account=1))
    response = fulfil(api, other.pk)
    assert response.status_code == 404
    assert PaymentIntent.objects.get(pk=other.pk).fulfilled_at is None


def test_endpoints_may_subscribe_to_fulfilment_events(merchant, settings):
    from payments.webhooks.endpoints import endpoint_create

    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    endpoint, _ = endpoint_create(
        merchant=merchant,
        url="http://127.0.0.1:9/hook",
        event_types=["payment.fulfilled"],
        now=timezone.now(),
    )
    assert endpoint.event_types == ["payment.fulfilled"]

"""Idempotency-Key: the record written once, with the response, at the end of the request's transaction;
the stored outcome answers every later request with the key, whatever running it again would do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payments.models import Event, IdempotencyRecord, PaymentAddress, PaymentIntent

pytestmark = pytest.mark.django_db

BODY = {"amount": "10.00", "currency": "USDC", "asset": "USDC", "network": "ethereum"}
INTENTS = "/api/v1/payment-intents"


def post(api, path, body, key):
    return api.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_create_writes_its_record_in_its_own_statement(api):
    post(api, INTENTS, BODY, "warm")  # the first request of a process also reads reference data
    with CaptureQueriesContext(connection) as queries:
        first = post(api, INTENTS, BODY, "once")
    assert first.status_code == 201
    # the address claim, then the quote, intent, transition, events and idempotency record in one statement
    # (the test's own transaction makes the request's a savepoint: left out with BEGIN and COMMIT)
    statements = [
        q["sql"] for q in queries if not q["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ]
    assert len(statements) == 2, statements
    assert "payments_paymentaddress" in statements[0]
    assert "payments_paymentintent" in statements[1] and "payments_idempotencyrecord" in statements[1]
    record = IdempotencyRecord.objects.get(key="once")
    assert (record.response_status, record.response_body) == (201, first.json())


def test_a_create_without_an_asset_writes_its_record_after_it(api):
    response = post(api, INTENTS, {"amount": "10.00", "currency": "USD"}, "no-asset")
    assert response.status_code == 201 and response.json()["state"] == "created"
    record = IdempotencyRecord.objects.get(key="no-asset")
    assert (record.response_status, record.response_body) == (201, response.json())
    again = post(api, INTENTS, {"amount": "10.00", "currency": "USD"}, "no-asset")
    assert again["Idempotent-Replayed"] == "true" and again.json() == response.json()
    assert PaymentIntent.objects.count() == 1


def test_a_replay_of_a_create_writes_nothing_and_frees_what_it_claimed(api):
    first = post(api, INTENTS, BODY, "same")
    claimed = PaymentAddress.objects.filter(claimed_at__isnull=False).count()
    again = post(api, INTENTS, BODY, "same")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert PaymentIntent.objects.count() == 1 and Event.objects.count() == 2
    assert PaymentAddress.objects.filter(claimed_at__isnull=False).count() == claimed


def test_a_replay_is_answered_where_running_the_request_again_would_fail(api):
    intent_id = post(api, INTENTS, BODY, "create").json()["id"]
    cancel = f"{INTENTS}/{intent_id}/cancel"
    first = post(api, cancel, {}, "cancel-1")
    assert first.status_code == 200 and first.json()["state"] == "expired"
    again = post(api, cancel, {}, "cancel-1")  # a second cancel would be a 409 intent_not_cancelable
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    fresh = post(api, cancel, {}, "cancel-2")
    assert fresh.status_code == 409 and fresh.json()["error"]["code"] == "intent_not_cancelable"


def test_a_reused_key_with_an_invalid_body_is_a_422_not_the_body_error(api):
    post(api, INTENTS, BODY, "k")
    response = post(api, INTENTS, BODY | {"amount": "-1"}, "k")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"


def test_an_expired_record_frees_its_key(api, settings):
    first = post(api, INTENTS, BODY, "old")
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=IdempotencyRecord.objects.get(key="old").created_at
        - timedelta(hours=settings.GATEWAY_IDEMPOTENCY_TTL_HOURS + 1)
    )
    again = post(api, INTENTS, BODY, "old")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert again.json()["id"] != first.json()["id"]
    assert IdempotencyRecord.objects.filter(key="old").count() == 1


def test_a_record_written_in_the_create_statement_never_stores_a_secret_in_the_clear():
    """The record takes the statement's own snapshot only when it is stored as it is; an answer that shows
    a secret once is stored with it encrypted, as every other record is."""
    from django.utils import timezone

    from payments.api.idempotency import RecordSlot

    slot = RecordSlot("mer_x", "k", "f" * 64, timezone.now()).answering(201)
    sql, params = slot.insert_sql({"id": "pi_x"}, "(SELECT j FROM s)")
    assert "(SELECT j FROM s)" in sql and params == ["mer_x", "k", "f" * 64, slot.created_at, 201]
    sql, params = slot.insert_sql({"id": "we_x", "secret": "whsec_plain"}, "(SELECT j FROM s)")
    assert "(SELECT j FROM s)" not in sql and len(params) == 6
    assert "whsec_plain" not in str(params[5].obj) and "secret_encrypted_for_replay" in params[5].obj

"""Idempotency-Key: the record written once, with the response, in the request's transaction (a create's
single statement); the stored outcome answers every later request with the key, whatever running it again would do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection

from payments.models import Event, IdempotencyRecord, PaymentAddress, PaymentIntent

pytestmark = pytest.mark.django_db

BODY = {"amount": "10.00", "currency": "USDC", "asset": "USDC", "network": "ethereum"}
INTENTS = "/api/v1/payment-intents"


def post(api, path, body, key):
    return api.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


class _Statements:
    """Every statement the connection runs, with whether it ran as a transaction of its own (autocommit,
    outside any atomic block): what PostgreSQL is sent, not what the ORM logs."""

    def __init__(self):
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, execute, sql, params, many, context):
        alone = connection.get_autocommit() and not connection.in_atomic_block
        self.seen.append((sql, alone))
        return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
def test_a_create_is_one_statement_its_own_transaction_and_a_replay_writes_nothing(api):
    body = BODY | {"currency": "USD"}  # with a quote
    post(api, INTENTS, body, "warm")  # the first request of a process also reads the tiers and reference data
    statements = _Statements()
    with connection.execute_wrapper(statements):
        first = post(api, INTENTS, body, "once")
    assert first.status_code == 201
    # the connection's health check is not the create's: the claim, quote, intent, transition, events and
    # record are one statement, sent in autocommit (no BEGIN, no COMMIT)
    creates = [(sql, alone) for sql, alone in statements.seen if "payments_paymentintent" in sql]
    assert len(statements.seen) == 1 and len(creates) == 1, statements.seen
    sql, alone = creates[0]
    assert alone
    for table in ("paymentaddress", "quote", "statetransition", "event", "idempotencyrecord"):
        assert f"payments_{table}" in sql
    record = IdempotencyRecord.objects.get(key="once")
    assert (record.response_status, record.response_body) == (201, first.json())
    stored = Event.objects.filter(intent_id=first.json()["id"]).order_by("sequence")
    assert [e.payload | {"sequence": None, "state": None} for e in stored] == [
        first.json() | {"sequence": None, "state": None}
    ] * 2
    claimed = PaymentAddress.objects.filter(claimed_at__isnull=False).count()
    again = post(api, INTENTS, body, "once")  # its statement fails on the record's key: the claim with it
    assert (
        again.status_code == 201 and again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    )
    assert PaymentAddress.objects.filter(claimed_at__isnull=False).count() == claimed
    assert PaymentIntent.objects.count() == 2 and Event.objects.count() == 4


def test_a_create_without_an_asset_writes_its_record_in_its_transaction(api):
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
    """The record takes the statement's own snapshot, stored as it is: an answer that shows a secret once
    (stored encrypted by every other path) is refused rather than written from it."""
    from django.utils import timezone

    from payments.api.idempotency import RecordSlot

    slot = RecordSlot("mer_x", "k", "f" * 64, timezone.now()).answering(201)
    sql, params = slot.insert_sql({"id": "pi_x"}, "(SELECT j FROM s)", "EXISTS (SELECT 1 FROM c)")
    assert "(SELECT j FROM s)" in sql and "WHERE EXISTS (SELECT 1 FROM c)" in sql
    assert "ON CONFLICT" not in sql  # a taken key fails the statement, and everything it wrote
    assert params == ["mer_x", "k", "f" * 64, slot.created_at, 201]
    with pytest.raises(ValueError):
        slot.insert_sql({"id": "we_x", "secret": "whsec_plain"}, "(SELECT j FROM s)")


def test_a_create_that_finds_its_key_taken_knows_it_from_the_error():
    """A create's statement fails on the record's key when the key is taken; if that record is purged
    (expired) before it is read, the request runs again rather than answering a 500."""
    from django.db import IntegrityError, transaction
    from django.utils import timezone

    from payments.api.idempotency import _on_the_key
    from tests.factories import make_merchant

    merchant = make_merchant()
    row = [merchant.pk, "k", "f" * 64, timezone.now(), 201]
    insert = (
        "INSERT INTO payments_idempotencyrecord (merchant_id, key, request_fingerprint, created_at, "
        "response_status, response_body) VALUES (%s, %s, %s, %s, %s, '{}')"
    )
    with connection.cursor() as cursor:
        cursor.execute(insert, row)
    with pytest.raises(IntegrityError) as taken, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(insert, row)
    assert _on_the_key(taken.value)
    with pytest.raises(IntegrityError) as other, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO payments_idempotencyrecord (merchant_id) VALUES ('mer_none')")
    assert not _on_the_key(other.value)

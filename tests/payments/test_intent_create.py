"""The create's single statement (payments/services/intent_create.py), in autocommit as the API runs it:
a round that writes nothing leaves nothing behind, what follows the statement cannot undo it, and no
request input reaches the slot the statement fills with the address."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

from payments.models import (
    ConfirmationRule,
    Event,
    NetworkAsset,
    PaymentAddress,
    PaymentIntent,
    StateTransition,
)
from payments.selectors import ADDRESS_SLOT
from payments.services import intent_create

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"amount": "10.00", "currency": "USDC", "asset": "USDC", "network": "ethereum"}
INTENTS = "/api/v1/payment-intents"


def create_statements(statements: list[str]):
    def record(execute, sql, params, many, context):
        if "INSERT INTO payments_paymentintent" in sql:
            statements.append(sql)
        return execute(sql, params, many, context)

    return connection.execute_wrapper(record)


def test_rounds_that_write_nothing_leave_nothing_behind(api, merchant, settings):
    settings.GATEWAY_ADDRESS_POOL_BATCH = 2
    assert api.post(INTENTS, BODY, format="json").status_code == 201  # this process keeps the tiers
    usdc = NetworkAsset.objects.get(asset__code="USDC", network__code="ethereum")
    ConfirmationRule.objects.create(merchant=merchant, network_asset=usdc, confirmations=5)  # elsewhere
    PaymentAddress.objects.filter(claimed_at__isnull=True).delete()  # and nothing left to claim
    statements: list[str] = []
    with create_statements(statements):
        response = api.post(INTENTS, BODY, format="json")
    assert response.status_code == 201 and response.json()["required_confirmations"] == 5
    # other tiers: nothing written; no address: nothing written, refilled; then the create
    assert len(statements) == 3
    assert not PaymentAddress.objects.filter(claimed_at__isnull=False, intent__isnull=True).exists()
    assert (PaymentIntent.objects.count(), StateTransition.objects.count(), Event.objects.count()) == (
        2,
        2,
        4,
    )


def test_a_top_up_that_fails_after_the_create_is_logged_and_the_create_answered(
    api, settings, monkeypatch, caplog
):
    settings.GATEWAY_ADDRESS_POOL_BATCH = 4
    real, failed = intent_create.address_pool_refill, []

    def refill(**kwargs):
        if kwargs.get("skip_if_busy"):  # the top-up after a create, not the refill of an empty pool
            failed.append(kwargs)
            raise RuntimeError("the derivation failed")
        return real(**kwargs)

    monkeypatch.setattr(intent_create, "address_pool_refill", refill)
    caplog.set_level(logging.ERROR, logger=intent_create.__name__)
    # indexes 0 and 1 leave more than half a batch; 2 leaves 1 of 4: the top-up runs, and fails
    responses = [api.post(INTENTS, BODY, format="json") for _ in range(3)]
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert len(failed) == 1 and failed[0]["only_from"] == 4
    assert "topping up the address pool" in caplog.text
    assert PaymentIntent.objects.count() == 3 and Event.objects.count() == 6


def test_input_that_spells_the_address_slot_stays_as_it_was_given(api):
    given = {
        "merchant_order_id": ADDRESS_SLOT,
        "customer_id": f"x{ADDRESS_SLOT}x",
        "metadata": {ADDRESS_SLOT: ADDRESS_SLOT, "address": ADDRESS_SLOT, "payment_uri": [ADDRESS_SLOT]},
    }
    response = api.post(INTENTS, BODY | given, format="json")
    assert response.status_code == 201, response.content
    answer = response.json()
    assert {name: answer[name] for name in given} == given
    assert ADDRESS_SLOT not in answer["payment_uri"] and answer["address"] in answer["payment_uri"]
    for payload in Event.objects.filter(intent_id=answer["id"]).values_list("payload", flat=True):
        assert {name: payload[name] for name in given} == given
        assert (payload["address"], payload["payment_uri"]) == (answer["address"], answer["payment_uri"])


def test_the_create_statement_is_parsed_once_per_process(api, monkeypatch):
    """psycopg keeps the conversion of a statement's placeholders only for texts up to a length the
    create's statement passes (services/rows.py raises it): else it is parsed again at every create."""
    from psycopg import _queries

    parsed: list[int] = []
    uncached = _queries._query2pg_nocache

    def parse(query, encoding):
        parsed.append(len(query))
        return uncached(query, encoding)

    def create(key: str):  # the longest statement: with a quote and the idempotency record
        body = BODY | {"currency": "USD"}
        assert api.post(INTENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=key).status_code == 201

    create("warm")
    statements: list[str] = []
    monkeypatch.setattr(_queries, "_query2pg_nocache", parse)
    with create_statements(statements):
        for key in "abc":
            create(key)
    assert len(statements) == 3 and len(statements[0].encode()) > 4096  # longer than psycopg's own limit
    assert parsed == []

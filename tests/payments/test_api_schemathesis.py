"""The merchant API fuzzed from its own OpenAPI schema by schemathesis (an independent tool): every
operation, valid and invalid input, with every default check (no server error, status codes, content
types, headers and bodies as documented). Bounded: a fixed seed and a fixed number of examples per
operation, so the run takes about the same time every time and finds the same cases.

Before: list operations were documented as arrays, error bodies, `Idempotency-Key` and amount formats
were undocumented, and a NUL in an events filter was a 500."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, seed, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from gateway.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_connection_per_test():
    """The WSGI handler closes the database connection after each request; the test's transaction lives
    on it, so keep it open for the test's length (what Django's own test client does)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def fixed_rates(settings):
    """No rate source is reachable from the tests: a fixed one, so fiat prices convert."""
    settings.GATEWAY_RATE_SOURCE = "fixed"
    settings.GATEWAY_FIXED_RATES = "ETH-USD=3000,BTC-USD=60000,LTC-USD=80,USDC-USD=1,ETH-EUR=2750"


@pytest.fixture
def all_scopes(merchant):
    from payments.models import ApiKey
    from tests.factories import make_api_key

    return make_api_key(merchant, scopes=ApiKey.SCOPES)[1]


def negative_only_off_the_wire(case) -> bool:
    """Whether every negative part of the case is one the request never carries, so the request sent is
    valid and accepting it is right: the Authorization header (the test's key replaces whatever was
    generated: a malformed or missing key), and an extra query parameter that serializes to nothing (an
    empty name or an empty list: a URL cannot say it)."""
    meta = case.meta
    if meta is None:
        return False
    mutations = getattr(meta.phase.data, "mutations", ()) or ()
    for location in (loc for loc in meta.components if meta.is_negative_at(loc)):
        if location.value == "header":
            continue
        unsendable = {k for k, v in (case.query or {}).items() if k == "" or v in ([], None)}
        keywords = {kw for m in mutations if m.parameter_location == location for kw in m.keywords}
        if location.value == "query" and unsendable and keywords == {"additionalProperties"}:
            continue
        return False
    return True


@seed(20261127)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,  # no example database in the working tree: the same cases every run
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_the_api_answers_as_its_schema_says(case, all_scopes):
    # Not a schema check: a well-formed but unknown currency, cursor or id is refused by the domain (400 or
    # 404 with a stable code), which a schema cannot express.
    excluded = [positive_data_acceptance]
    if negative_only_off_the_wire(case):
        excluded.append(negative_data_rejection)
    case.call_and_validate(headers={"Authorization": f"Bearer {all_scopes}"}, excluded_checks=excluded)


def test_real_objects_answer_as_the_schema_says(all_scopes, merchant, settings):
    """Random ids only reach 404s: walk each operation once with objects that exist, so every 2xx body
    (intent, endpoint, deliveries, events) is validated against the schema too."""
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    headers = {"Authorization": f"Bearer {all_scopes}"}

    def call(path: str, method: str, **parts):
        case = schema[path][method].Case(**parts)
        response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    created = call(
        "/api/v1/payment-intents",
        "POST",
        body={"amount": "25.00", "currency": "USD", "merchant_order_id": "o-1", "metadata": {"a": [1]}},
        headers={"Idempotency-Key": "schema-1"},
    )
    intent_id = created["id"]
    call("/api/v1/payment-intents/{intent_id}", "GET", path_parameters={"intent_id": intent_id})
    call(
        "/api/v1/payment-intents/{intent_id}/select-asset",
        "POST",
        path_parameters={"intent_id": intent_id},
        body={"asset": "ETH", "network": "evm-local"},
    )
    call("/api/v1/payment-intents", "GET", query={"limit": 1})
    call("/api/v1/payment-intents/{intent_id}/cancel", "POST", path_parameters={"intent_id": intent_id})

    endpoint = call("/api/v1/webhook-endpoints", "POST", body={"url": "http://127.0.0.1:9/hooks"})
    ids = {"endpoint_id": endpoint["id"]}
    call("/api/v1/webhook-endpoints", "GET")
    call("/api/v1/webhook-endpoints/{endpoint_id}", "GET", path_parameters=ids)
    call("/api/v1/webhook-endpoints/{endpoint_id}", "PATCH", path_parameters=ids, body={"description": "x"})
    call("/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret", "POST", path_parameters=ids, body={})

    from django.utils import timezone

    from payments.webhooks.delivery import events_dispatch

    events_dispatch(now=timezone.now())
    events = call("/api/v1/events", "GET", query={"limit": 2})
    assert events["data"], "the intent's events are listed"
    event_id = events["data"][0]["id"]
    call("/api/v1/events/{event_id}", "GET", path_parameters={"event_id": event_id})
    call(
        "/api/v1/events/{event_id}/redeliver",
        "POST",
        path_parameters={"event_id": event_id},
        body={"endpoint_id": endpoint["id"]},
    )
    call("/api/v1/events/{event_id}/deliveries", "GET", path_parameters={"event_id": event_id})
    call("/api/v1/webhook-endpoints/{endpoint_id}/deliveries", "GET", path_parameters=ids)
    call(
        "/api/v1/webhook-endpoints/{endpoint_id}/replay",
        "POST",
        path_parameters=ids,
        body={"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
    )
    call("/api/v1/webhook-endpoints/{endpoint_id}", "DELETE", path_parameters=ids)

    # A paid intent, refunded; its funds swept to an address nobody declared: a refund and a settlement.
    from payments import services
    from payments.chains.base import Destination, Spend
    from tests.payments.test_services_settle import block, new_intent, transfer

    now = timezone.now()
    paid = new_intent(merchant)
    services.observation_record(transfer=transfer(paid, tx="0xschema", **block(100, now)), now=now)
    contract = paid.network_asset.contract_address
    outflow = services.outflow_record(
        spend=Spend(
            "ethereum",
            "0xsweep",
            1,
            paid.address.address,
            10_000_000,
            token_contract=contract,
            destinations=(Destination(1, "0x" + "cd" * 20, 10_000_000, contract),),
            fee_base_units=10**15,
            fee_payer=paid.address.address,
            block_height=101,
            block_hash="0xb101",
            block_time=now,
            position_in_block=0,
        ),
        now=now,
    )
    services.settlements_derive(transaction_ids=[outflow.transaction_id], now=now)
    refund = call(
        "/api/v1/refunds",
        "POST",
        body={
            "payment_intent": paid.pk,
            "amount": {"kind": "custom", "value": "2.5"},
            "reason": "one item back",
        },
    )
    refund_ids = {"refund_id": refund["id"]}
    call("/api/v1/refunds", "GET", query={"payment_intent": paid.pk})
    call("/api/v1/refunds/{refund_id}", "GET", path_parameters=refund_ids)
    call("/api/v1/refunds/{refund_id}/cancel", "POST", path_parameters=refund_ids)
    settlements = call("/api/v1/settlements", "GET", query={"payment_intent": paid.pk})
    [settlement] = settlements["data"]
    assert settlement["kind"] == "unknown_outflow" and settlement["legs"][0]["payment_intent"] == paid.pk
    call("/api/v1/settlements/{settlement_id}", "GET", path_parameters={"settlement_id": settlement["id"]})
    report = call("/api/v1/reports/reconciliation.json", "GET", query={"limit": 1000})
    assert settlement["id"] in [s for row in report["data"] for s in row["settlement_ids"]]
    case = schema["/api/v1/reports/reconciliation.csv"]["GET"].Case(query={"from": "2000-01-01"})
    assert (
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance]).status_code == 200
    )

"""The per-process cache of API keys: one read per key and GATEWAY_API_KEY_CACHE_S, and a revocation, a
merchant disabled or a scope change honoured by every process within that time."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from payments import accounts
from payments.models import ApiKey, Merchant
from tests.factories import make_api_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    """The cache's clock, moved by hand."""
    now = [1_000.0]
    monkeypatch.setattr(accounts, "_clock", lambda: now[0])
    return now


def client_for(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def key_reads(client: APIClient) -> tuple[int, int]:
    """(status, statements that read an API key) of one list request."""
    with CaptureQueriesContext(connection) as queries:
        status = client.get("/api/v1/payment-intents").status_code
    return status, sum("payments_apikey" in q["sql"] and "SELECT" in q["sql"] for q in queries)


def test_a_key_is_read_once_per_cache_period(merchant, clock, settings):
    settings.GATEWAY_API_KEY_CACHE_S = 5
    _, secret = make_api_key(merchant)
    client = client_for(secret)
    assert key_reads(client) == (200, 1)
    clock[0] += 4.9
    assert key_reads(client) == (200, 0)
    clock[0] += 0.1
    assert key_reads(client) == (200, 1)


def test_a_revocation_elsewhere_is_honoured_within_the_cache_period(merchant, clock, settings):
    settings.GATEWAY_API_KEY_CACHE_S = 5
    key, secret = make_api_key(merchant)
    client = client_for(secret)
    assert key_reads(client) == (200, 1)
    # another process revokes it: this one has it cached
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    clock[0] += 4
    assert client.get("/api/v1/payment-intents").status_code == 200
    clock[0] += 1
    refused = client.get("/api/v1/payment-intents")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_revoked"


def test_a_revocation_through_the_service_is_honoured_at_once_in_this_process(merchant, clock):
    key, secret = make_api_key(merchant)
    client = client_for(secret)
    assert client.get("/api/v1/payment-intents").status_code == 200
    accounts.api_key_revoke(api_key=key, now=timezone.now())
    refused = client.get("/api/v1/payment-intents")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_revoked"


def test_a_merchant_disabled_and_a_scope_removed_are_honoured_within_the_cache_period(
    merchant, clock, settings
):
    settings.GATEWAY_API_KEY_CACHE_S = 5
    key, secret = make_api_key(merchant)
    client = client_for(secret)
    assert client.get("/api/v1/payment-intents").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(scopes=["payments:write"])
    clock[0] += 5
    denied = client.get("/api/v1/payment-intents")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "missing_scope"
    Merchant.objects.filter(pk=merchant.pk).update(is_active=False)
    clock[0] += 5
    refused = client.get("/api/v1/payment-intents")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "merchant_disabled"


def test_unknown_keys_are_not_cached_and_a_new_key_works_at_once(merchant, clock):
    _, secret = make_api_key(merchant)
    unknown = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    for _ in range(3):
        assert client_for(unknown).get("/api/v1/payment-intents").status_code == 401
    assert accounts._key_cache == {}
    assert client_for(secret).get("/api/v1/payment-intents").status_code == 200
    assert len(accounts._key_cache) == 1


def test_no_cache_when_the_period_is_zero(merchant, settings):
    settings.GATEWAY_API_KEY_CACHE_S = 0
    _, secret = make_api_key(merchant)
    client = client_for(secret)
    assert key_reads(client) == (200, 1)
    assert key_reads(client) == (200, 1)
    assert accounts._key_cache == {}


def test_a_request_gets_its_own_copy_of_the_cached_key_and_merchant(merchant, clock):
    _, secret = make_api_key(merchant)
    now = timezone.now()
    first = accounts.api_key_authenticate(presented=secret, now=now)
    first.merchant.name = "changed by a request"
    second = accounts.api_key_authenticate(presented=secret, now=now)
    assert second is not first and second.merchant is not first.merchant
    assert second.merchant.name == merchant.name

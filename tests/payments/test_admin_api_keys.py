"""API keys in the admin: adding one goes through `api_key_create` and shows a key that works against the
API, once; revoking goes through `api_key_revoke`; staff who may only look can do neither. Every client is
a real staff user (never a superuser) holding exactly the permissions named."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from payments.models import ApiKey
from tests.factories import make_api_key, make_merchant, make_staff

pytestmark = pytest.mark.django_db

KEYS = "/admin/payments/apikey/"


def staff_client(*codenames: str) -> Client:
    client = Client()
    client.force_login(make_staff(*codenames))
    return client


def api_status(secret: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client.get("/api/v1/payment-intents").status_code


def shown_secret(page) -> str:
    found = re.findall(rb'<code id="api-key-secret"[^>]*>([^<]+)</code>', page.content)
    assert len(found) == 1, page.content[-3000:]
    return found[0].decode()


def add_key(client: Client, merchant, /, **fields):
    data = {"merchant": merchant.pk, "scopes": ["payments:read"], "name": "shop", **fields}
    return client.post(f"{KEYS}add/", data)


def test_adding_a_key_shows_a_working_secret_once_and_stores_only_its_digest():
    merchant = make_merchant()
    client = staff_client("add_apikey", "view_apikey")
    assert client.get(f"{KEYS}add/").status_code == 200

    first_page = add_key(client, merchant)
    assert first_page.status_code == 200
    assert "no-store" in first_page["Cache-Control"], "the page with the key is not cached"
    first = shown_secret(first_page)
    assert api_status(first) == 200, "the key shown authenticates against the API"
    assert api_status(first + "x") == 401

    second_page = add_key(client, merchant, name="second", scopes=["payments:read", "webhooks:read"])
    assert second_page.status_code == 200, "a second key is added as well"
    second = shown_secret(second_page)
    assert second != first and api_status(second) == 200 and api_status(first) == 200

    keys = list(ApiKey.objects.order_by("created_at", "id"))
    assert [(k.name, k.scopes) for k in keys] == [
        ("shop", ["payments:read"]),
        ("second", ["payments:read", "webhooks:read"]),
    ]
    for key, secret in zip(keys, (first, second), strict=True):
        assert key.prefix and secret.startswith(key.prefix) and len(key.prefix) < len(secret) // 2
        stored = [str(v) for v in ApiKey.objects.filter(pk=key.pk).values().get().values()]
        assert key.digest and not any(secret in value for value in stored), "the secret is never stored"

    pages = [KEYS, f"{KEYS}?q={keys[0].prefix}"] + [f"{KEYS}{k.pk}/change/" for k in keys]
    for url in pages:
        page = client.get(url)
        assert page.status_code == 200, url
        assert first.encode() not in page.content and second.encode() not in page.content, url
    assert keys[0].prefix.encode() in client.get(KEYS).content, "the prefix names the key"


def test_bad_add_input_is_a_form_error_not_a_key():
    merchant = make_merchant()
    client = staff_client("add_apikey", "view_apikey")
    for fields in ({"scopes": []}, {"scopes": ["payments:everything"]}, {"merchant": "nope"}):
        page = add_key(client, merchant, **fields)
        assert page.status_code == 200 and b"errorlist" in page.content, fields
        assert b"api-key-secret" not in page.content
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    "codenames", [(), ("view_apikey",), ("view_apikey", "change_apikey", "delete_apikey")]
)
def test_only_staff_with_the_add_permission_add_keys(codenames):
    merchant = make_merchant()
    client = staff_client(*codenames)
    listing = client.get(KEYS)
    assert listing.status_code == (200 if codenames else 403)
    assert b"addlink" not in listing.content
    assert client.get(f"{KEYS}add/").status_code == 403
    response = add_key(client, merchant)
    assert response.status_code == 403 and b"gwk_" not in response.content
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("level", ["none", "view only", "change"])
def test_revoking_in_the_admin_needs_the_change_permission_and_goes_through_the_service(level):
    merchant = make_merchant()
    key, secret = make_api_key(merchant)
    client = staff_client(*{"none": (), "view only": ("view_apikey",), "change": ("change_apikey",)}[level])
    before = list(ApiKey.objects.values())
    listing = client.get(KEYS)
    response = client.post(KEYS, {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    if level == "change":
        assert b'value="revoke"' in listing.content
        assert key.revoked_at is not None and api_status(secret) == 401
        return
    assert listing.status_code == (403 if level == "none" else 200)
    assert b'value="revoke"' not in listing.content
    assert response.status_code == 403
    assert list(ApiKey.objects.values()) == before and api_status(secret) == 200


def test_a_key_is_never_edited_or_deleted_in_the_admin():
    """Its merchant, scopes or revocation do not change through the form, and a key is revoked rather
    than deleted (the row stays, so its prefix in old logs still names it)."""
    merchant, other = make_merchant(), make_merchant("Other", account=1, wallets=False)
    key, secret = make_api_key(merchant)
    client = staff_client("view_apikey", "change_apikey", "delete_apikey")
    page = client.get(f"{KEYS}{key.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content and b"deletelink" not in page.content
    assert b'value="delete_selected"' not in client.get(KEYS).content
    before = list(ApiKey.objects.values())
    edit = {"merchant": other.pk, "scopes": "payments:read,payments:write,webhooks:write", "revoked_at": ""}
    assert client.post(f"{KEYS}{key.pk}/change/", edit).status_code == 403
    assert client.post(f"{KEYS}{key.pk}/delete/", {"post": "yes"}).status_code == 403
    assert list(ApiKey.objects.values()) == before and api_status(secret) == 200

"""A network's node URL may hold a password or an API key: the admin shows it redacted to everyone, lets
whoever may change the network set a new one without echoing the old, and lists scan errors."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from payments.models import Network, ScanStatus

pytestmark = pytest.mark.django_db

SECRET_URL = "http://user:s3cret@127.0.0.1:8545/v3/APIKEY123"


@pytest.fixture
def network():
    network = Network.objects.get(code="ethereum")
    network.rpc_url = SECRET_URL
    network.save()
    return network


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user("staff-" + "-".join(codenames), password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="payments", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def assert_no_secret(page) -> None:
    assert page.status_code == 200
    assert b"s3cret" not in page.content
    assert b"APIKEY123" not in page.content


def test_view_only_staff_never_see_node_credentials(network):
    client = staff_client("view_network")
    listing = client.get("/admin/payments/network/")
    change = client.get(f"/admin/payments/network/{network.pk}/change/")
    assert_no_secret(change)
    assert_no_secret(listing)
    for page in (listing, change):
        assert b"http://***@127.0.0.1:8545/\xe2\x80\xa6" in page.content  # which node, redacted
    assert b'name="rpc_url"' not in change.content


@pytest.mark.parametrize(
    "lookup", ["rpc_url__startswith=http://user", "rpc_url__contains=s3cret", "rpc_url__regex=.", "rpc_url=x"]
)
def test_the_node_url_cannot_be_guessed_through_list_filters(network, lookup):
    """Before: ?rpc_url__startswith=... listed the network or not, so its URL could be read a character at
    a time by anyone who may view networks."""
    client = staff_client("view_network")
    client.raise_request_exception = False
    response = client.get(f"/admin/payments/network/?{lookup}")
    assert response.status_code == 400
    assert network.code.encode() not in response.content


def management_form(content: bytes) -> dict[str, str]:
    """The inline formsets' hidden fields as the page renders them (their prefixes are the admin's)."""
    fields = re.findall(
        rb'<input type="hidden" name="([^"]+-(?:TOTAL|INITIAL|MIN_NUM|MAX_NUM)_FORMS)"', content
    )
    data = {name.decode(): "0" for name in fields}
    return {
        name: ("0" if name.endswith(("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS")) else "1000")
        for name in data
    }


def test_change_form_sets_a_new_node_url_without_echoing_the_old():
    network = Network.objects.create(
        code="test-evm",
        name="Test EVM",
        chain="evm",
        chain_id=990_001,
        uri_scheme="ethereum",
        rpc_url=SECRET_URL,
    )
    client = staff_client("view_network", "change_network")
    url = f"/admin/payments/network/{network.pk}/change/"
    page = client.get(url)
    assert_no_secret(page)
    assert b'name="rpc_url"' in page.content
    form = {
        "code": "test-evm",
        "name": "Test EVM",
        "chain": "evm",
        "chain_id": "990001",
        "bech32_hrp": "",
        "uri_scheme": "ethereum",
        "enabled": "on",
        "scan_start_height": "",
        **management_form(page.content),
    }

    assert client.post(url, {**form, "rpc_url": ""}).status_code == 302  # blank keeps the node
    network.refresh_from_db()
    assert network.rpc_url == SECRET_URL

    assert client.post(url, {**form, "rpc_url": "https://node.example/v3/NEWKEY4567"}).status_code == 302
    network.refresh_from_db()
    assert network.rpc_url == "https://node.example/v3/NEWKEY4567"
    assert b"NEWKEY4567" not in client.get(url).content

    assert client.post(url, {**form, "rpc_url": "", "rpc_url_clear": "on"}).status_code == 302
    network.refresh_from_db()
    assert network.rpc_url == ""


def test_network_list_shows_scan_errors(network):
    ScanStatus.objects.create(
        network=network,
        errors_total=7,
        errors_in_a_row=3,
        last_error="ethereum: cannot reach the node at http://***@127.0.0.1:8545/…",
        last_error_at=timezone.now(),
    )
    page = staff_client("view_network").get("/admin/payments/network/")
    assert b"3 / 7" in page.content
    assert b"cannot reach the node" in page.content


def test_add_form_takes_a_node_url(admin_client):
    page = admin_client.get("/admin/payments/network/add/")
    assert page.status_code == 200
    assert b'name="rpc_url"' in page.content and b'name="rpc_url_clear"' not in page.content

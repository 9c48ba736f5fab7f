"""Brute force on the admin login (/admin/login/) is locked out per username and per client address
(django-axes), through Django's real login view and authentication stack."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff(settings):
    # a fast hasher: this is about counting attempts, and the default hashing takes a second per attempt
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    User = get_user_model()
    alice = User.objects.create_user("alice", password=PASSWORD, is_staff=True, is_superuser=True)
    bob = User.objects.create_user("bob", password=PASSWORD, is_staff=True, is_superuser=True)
    return alice, bob


def login(client: Client, username: str, password: str):
    client.get("/admin/login/")  # the CSRF cookie, as a browser gets it
    return client.post(
        "/admin/login/",
        {"username": username, "password": password, "next": "/admin/"},
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value if "csrftoken" in client.cookies else "",
    )


def logged_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_sixty_wrong_passwords_then_the_right_one_is_refused(staff, settings):
    settings.AXES_FAILURE_LIMIT = 5
    attacker = Client(REMOTE_ADDR="203.0.113.66")
    codes = [login(attacker, "alice", f"guess-{i}").status_code for i in range(60)]
    assert codes[:4] == [200] * 4  # the form again, with its error
    assert set(codes[5:]) == {429}  # before: 60 x 200, then the right password logged in
    refused = login(attacker, "alice", PASSWORD)
    assert refused.status_code == 429
    assert not logged_in(attacker)
    # the username is locked from every address (the attacker may move), ...
    assert login(Client(REMOTE_ADDR="198.51.100.20"), "alice", PASSWORD).status_code == 429
    # ... and the address for every username
    assert login(Client(REMOTE_ADDR="203.0.113.66"), "bob", PASSWORD).status_code == 429
    # another user from another address is unaffected
    other = Client(REMOTE_ADDR="198.51.100.21")
    assert login(other, "bob", PASSWORD).status_code == 302
    assert logged_in(other)


def test_the_lockout_ends_after_the_cool_off(staff, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(seconds=4)
    client = Client(REMOTE_ADDR="203.0.113.67")
    for i in range(3):
        login(client, "alice", f"guess-{i}")
    assert login(client, "alice", PASSWORD).status_code == 429
    time.sleep(4.5)  # the real clock: the cool-off runs out
    assert login(client, "alice", PASSWORD).status_code == 302
    assert logged_in(client)


def test_behind_trusted_proxies_the_forwarded_client_is_locked_out_not_the_proxy(staff, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.GATEWAY_TRUSTED_PROXIES = ["10.0.0.0/8"]

    def via_proxy(client_address: str) -> Client:
        return Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=client_address)

    for i in range(3):
        login(via_proxy("203.0.113.70"), "mallory", f"guess-{i}")
    assert login(via_proxy("203.0.113.70"), "bob", PASSWORD).status_code == 429  # that client's address
    customer = via_proxy("198.51.100.30")  # another client behind the same proxy
    assert login(customer, "bob", PASSWORD).status_code == 302
    # a peer that is no trusted proxy cannot choose its address with the header
    spoofer = Client(REMOTE_ADDR="203.0.113.70", HTTP_X_FORWARDED_FOR="198.51.100.31")
    assert login(spoofer, "alice", PASSWORD).status_code == 429

"""Webhook signing secrets are encrypted at rest (Fernet, keys from GATEWAY_SECRETS_KEYS): the database
holds neither the secret nor its key bytes, messages still verify with the reference Standard Webhooks
implementation, the keys rotate with `manage.py rotate_secrets_key`, and a database value alone signs
nothing a receiver accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from payments.encryption import SecretUndecryptable, secret_decrypt
from payments.webhooks.delivery import deliver_due
from tests.payments.test_services_settle import new_intent
from tests.webhooks.test_api import add_endpoint, api, shop  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def stored_rows() -> list[str]:
    """Every webhook secret row as the database holds it (all columns), read with raw SQL."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(s)::text FROM payments_webhooksecret s ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def forms_of(secret: str) -> list[str]:
    """The secret and every encoding of its key bytes that a dump could show."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return [
        secret,
        secret.removeprefix("whsec_"),
        base64.urlsafe_b64encode(key).decode(),
        key.hex(),
    ]


def delivered(receiver, shop, count: int):  # noqa: F811
    new_intent(shop)
    deliver_due(now=timezone.now())
    assert len(receiver.received) == count
    return receiver.received[-1]


def test_the_database_holds_no_secret_and_signatures_still_verify(api, shop, receiver):  # noqa: F811
    created = add_endpoint(api, receiver.url, event_types=["payment.created"])
    secret = created["secret"]
    (row,) = stored_rows()
    for form in forms_of(secret):
        assert form not in row  # before: the secret was in the clear
    assert json.loads(row)["secret_encrypted"].startswith("gAAAAA")  # a Fernet token (version 0x80)
    request = delivered(receiver, shop, 1)
    Webhook(secret).verify(request.body, request.headers)  # the reference implementation


def test_rotation_overlap_secrets_are_encrypted_too_and_both_sign(api, shop, receiver):  # noqa: F811
    created = add_endpoint(api, receiver.url, event_types=["payment.created"])
    rotated = api.post(
        f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret", {"overlap_hours": 2}, format="json"
    ).json()
    rows = stored_rows()
    assert len(rows) == 2
    for secret in (created["secret"], rotated["secret"]):
        for form in forms_of(secret):
            assert all(form not in row for row in rows)
    request = delivered(receiver, shop, 1)
    Webhook(created["secret"]).verify(request.body, request.headers)
    Webhook(rotated["secret"]).verify(request.body, request.headers)


def test_rotating_the_encryption_key_keeps_every_secret(api, shop, receiver, settings):  # noqa: F811
    old_key = settings.GATEWAY_SECRETS_KEYS[0]
    created = add_endpoint(api, receiver.url, event_types=["payment.created"])
    rotated = api.post(
        f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret", {"overlap_hours": 2}, format="json"
    ).json()
    before = stored_rows()
    new_key = Fernet.generate_key().decode()
    settings.GATEWAY_SECRETS_KEYS = [new_key]
    with pytest.raises(SecretUndecryptable):  # the new key alone cannot read what the old one wrote
        secret_decrypt(json.loads(before[0])["secret_encrypted"])
    settings.GATEWAY_SECRETS_KEYS = [new_key, old_key]  # the new key first, the old one still listed
    call_command("rotate_secrets_key")
    after = stored_rows()
    assert after != before
    settings.GATEWAY_SECRETS_KEYS = [new_key]  # the old key removed
    for row in after:
        token = json.loads(row)["secret_encrypted"]
        Fernet(new_key.encode()).decrypt(token.encode())  # under the new key
        with pytest.raises(InvalidToken):
            Fernet(old_key.encode()).decrypt(token.encode())  # and no longer under the old one
    request = delivered(receiver, shop, 1)
    Webhook(created["secret"]).verify(request.body, request.headers)
    Webhook(rotated["secret"]).verify(request.body, request.headers)
    call_command("rotate_secrets_key")  # idempotent with one key
    assert [secret_decrypt(json.loads(r)["secret_encrypted"]) for r in stored_rows()] == [
        created["secret"],
        rotated["secret"],
    ]


def test_a_database_value_alone_cannot_sign(api, receiver):  # noqa: F811
    created = add_endpoint(api, receiver.url)
    (row,) = stored_rows()
    token = json.loads(row)["secret_encrypted"]
    body = b'{"type": "payment.paid", "data": {"id": "pi_forged"}}'
    msg_id, timestamp = "msg_forged", int(timezone.now().timestamp())
    signed = f"{msg_id}.{timestamp}.".encode() + body
    # whatever a forger derives from the stored value, the merchant's receiver refuses it
    candidate_keys = [
        token.encode(),
        base64.urlsafe_b64decode(token),
        hashlib.sha256(token.encode()).digest(),
    ]
    for key in candidate_keys:
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{signature}",
        }
        with pytest.raises(WebhookVerificationError):
            Webhook(created["secret"]).verify(body, headers)
    with pytest.raises(InvalidToken):  # without the operator's key the token opens to nothing
        Fernet(Fernet.generate_key()).decrypt(token.encode())


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_plaintext_secrets_and_reverses():
    from django.db.migrations.executor import MigrationExecutor

    from payments.webhooks import endpoints
    from tests.factories import make_merchant

    endpoint, secret = endpoints.endpoint_create(
        merchant=make_merchant(),
        url="https://93.184.215.14/hook",
        now=timezone.now(),
        resolve=lambda host, port: [host],
    )
    executor = MigrationExecutor(connection)
    this = ("payments", "0012_secure_webhook_secret_encryption")
    previous = ("payments", "0011_scan_network_scan_status")
    executor.migrate([previous])  # backwards: decrypted into the plaintext column of before
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM payments_webhooksecret WHERE endpoint_id = %s", [endpoint.pk])
        assert cursor.fetchall() == [(secret,)]
        old_plaintext = "whsec_" + base64.b64encode(b"a secret stored before encryption!").decode()
        cursor.execute(
            "INSERT INTO payments_webhooksecret (endpoint_id, secret, created_at) VALUES (%s, %s, now())",
            [endpoint.pk, old_plaintext],
        )
    executor = MigrationExecutor(connection)
    executor.migrate([this])  # forwards: every plaintext secret encrypted
    rows = stored_rows()
    assert len(rows) == 2
    for plaintext in (secret, old_plaintext):
        for form in forms_of(plaintext):
            assert all(form not in row for row in rows)
    decrypted = sorted(secret_decrypt(json.loads(row)["secret_encrypted"]) for row in rows)
    assert decrypted == sorted([secret, old_plaintext])
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_a_secret_no_key_opens_fails_its_endpoint_only(api, shop, receiver, settings, caplog):  # noqa: F811
    from payments.models import WebhookAttempt

    add_endpoint(api, receiver.url, event_types=["payment.created"])
    settings.GATEWAY_SECRETS_KEYS = [Fernet.generate_key().decode()]  # the old key removed too early
    new_intent(shop)
    deliver_due(now=timezone.now())  # no crash: the attempt fails and is retried later
    assert receiver.received == []
    (attempt,) = WebhookAttempt.objects.all()
    assert attempt.outcome == "failed" and "no active signing secret" in attempt.error
    assert "cannot be decrypted with any key in GATEWAY_SECRETS_KEYS" in caplog.text


def every_row_of_every_table() -> str:
    """The whole database as a dump would show it: every row of every table, as text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in cursor.fetchall()]
        dump = []
        for table in tables:
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
            dump += [row[0] for row in cursor.fetchall()]
    return "\n".join(dump)


def test_no_table_holds_a_secret_not_even_the_idempotent_replay(api, receiver):  # noqa: F811
    """Before: the idempotency record kept the create's and the rotation's answers, secret included, in
    the clear for 24 h."""
    response = api.post(
        "/api/v1/webhook-endpoints", {"url": receiver.url}, format="json", HTTP_IDEMPOTENCY_KEY="hook-1"
    )
    created = response.json()
    rotated = api.post(
        f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret",
        {},
        format="json",
        HTTP_IDEMPOTENCY_KEY="rotate-1",
    ).json()
    dump = every_row_of_every_table()
    for secret in (created["secret"], rotated["secret"]):
        for form in forms_of(secret):
            assert form not in dump
    # the replays still show the secret they showed the first time
    again = api.post(
        "/api/v1/webhook-endpoints", {"url": receiver.url}, format="json", HTTP_IDEMPOTENCY_KEY="hook-1"
    )
    assert again["Idempotent-Replayed"] == "true" and again.json() == created
    again = api.post(
        f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret",
        {},
        format="json",
        HTTP_IDEMPOTENCY_KEY="rotate-1",
    )
    assert again.json() == rotated

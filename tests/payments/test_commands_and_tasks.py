"""The set-up commands a newcomer or a script uses, and the Celery tasks beat runs."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from gateway.celery import app as celery_app
from payments import tasks
from payments.models import ApiKey, IdempotencyRecord, Merchant, PaymentIntent, Wallet
from tests.factories import BIP84_ZPUB, ETH_ACCOUNT_XPUB
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_newcomer_sets_up_a_merchant_and_creates_an_intent_with_the_printed_key():
    merchant_id = run("create_merchant", "Acme", "--expiry-minutes", "30")
    assert Merchant.objects.get(pk=merchant_id).expiry_minutes == 30
    assert "all EVM networks" in run("add_wallet", merchant_id, "--chain", "evm", "--xpub", ETH_ACCOUNT_XPUB)
    assert "bitcoin" in run("add_wallet", merchant_id, "--chain", "bitcoin", "--xpub", BIP84_ZPUB)
    key = run("create_api_key", merchant_id, "--scopes", "payments:read,payments:write")
    assert key.startswith("gwk_")
    stored = ApiKey.objects.get(merchant_id=merchant_id)
    assert key not in (stored.digest, stored.prefix) and stored.prefix == key[:12]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post(
        "/api/v1/payment-intents",
        {"amount": "0.01", "currency": "BTC", "asset": "BTC", "network": "bitcoin"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    run("revoke_api_key", stored.prefix)
    assert client.get("/api/v1/payment-intents").status_code == 401


def test_command_errors_are_clear():
    with pytest.raises(CommandError, match="unknown merchant"):
        run("add_wallet", "mer_nope", "--chain", "evm", "--xpub", ETH_ACCOUNT_XPUB)
    merchant_id = run("create_merchant", "Acme")
    with pytest.raises(CommandError, match="invalid_scope"):
        run("create_api_key", merchant_id, "--scopes", "payments:everything")
    with pytest.raises(CommandError, match="xpub_network_mismatch"):
        run(
            "add_wallet",
            merchant_id,
            "--chain",
            "bitcoin",
            "--xpub",
            BIP84_ZPUB,
            "--network",
            "bitcoin-regtest",
        )
    assert Wallet.objects.filter(merchant_id=merchant_id).count() == 0


def test_beat_schedule_names_registered_tasks():
    celery_app.loader.import_default_modules()  # what a worker does at start: every app's tasks module
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in celery_app.tasks


def test_expiry_task_expires_due_intents():
    intent = new_intent(now=timezone.now() - timedelta(hours=1))
    assert tasks.expire_due_intents.apply().get() == 1
    assert PaymentIntent.objects.get(pk=intent.pk).state == "expired"
    assert tasks.expire_due_intents.apply().get() == 0


def test_idempotency_records_are_purged_after_the_ttl():
    merchant = Merchant.objects.create(name="m")
    old = timezone.now() - timedelta(hours=settings.GATEWAY_IDEMPOTENCY_TTL_HOURS + 1)
    IdempotencyRecord.objects.create(merchant=merchant, key="old", request_fingerprint="x", created_at=old)
    IdempotencyRecord.objects.create(
        merchant=merchant, key="new", request_fingerprint="x", created_at=timezone.now()
    )
    assert tasks.purge_idempotency_records.apply().get() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]

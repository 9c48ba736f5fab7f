"""The drain under faults it must survive without losing or repeating an attempt: the database going
away for longer than a quick retry while attempts are in flight, and an endpoint whose URL and secret
change while claims for it are queued."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql
from standardwebhooks import Webhook

from payments.models import WebhookAttempt, WebhookDelivery
from payments.webhooks import endpoints
from payments.webhooks.delivery import deliveries_drain
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import endpoint_for

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def database_admin():
    """A connection to the server's `postgres` database, beside the test database."""
    params = connection.get_connection_params() | {"dbname": "postgres"}
    params.pop("cursor_factory", None)
    params.pop("context", None)
    admin = psycopg.connect(**params, autocommit=True)
    try:
        yield admin
    finally:
        admin.close()


def database_outage(admin: psycopg.Connection, seconds: float) -> None:
    """The test database refuses connections and every session of it is cut, for `seconds`: to the
    drain, the database is down (its statements fail, and so do its attempts to connect again)."""
    name = connection.settings_dict["NAME"]
    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
    try:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        time.sleep(seconds)
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))


def when(condition, action, timeout_s: float = 20.0) -> threading.Thread:
    """Run `action` on a thread as soon as `condition()` holds."""

    def run():
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_database_outage_during_a_drain_loses_no_result_and_sends_nothing_twice(receiver, settings):
    """The database goes away for 2 s with attempts in flight (a quick retry gives up after a fraction
    of that): the results taken meanwhile are kept and written when it is back; nothing is sent again,
    nothing is logged lost."""
    settings.GATEWAY_WEBHOOK_PER_ENDPOINT = 4
    receiver.delay_s = 0.2
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    for _ in range(10):
        new_intent(merchant)  # two events each: created, awaiting_payment
    with database_admin() as admin:
        cut = when(lambda: len(receiver.received) >= 3, lambda: database_outage(admin, 2.0))
        deliveries_drain(budget_s=10)
        cut.join(30)
    deliveries_drain(budget_s=10)  # nothing left for it, unless something was lost
    ids = receiver.ids()
    assert len(ids) == 20 and len(set(ids)) == 20, "each event sent once"
    assert set(WebhookDelivery.objects.values_list("state", "attempts")) == {("delivered", 1)}
    assert not WebhookAttempt.objects.filter(outcome="lost").exists()
    assert WebhookAttempt.objects.filter(outcome="succeeded").count() == 20


def test_claims_queued_when_the_url_and_secret_change_go_to_the_new_url_with_the_new_secret(settings):
    """A slow endpoint with claims queued; the merchant moves it and rotates its secret with no overlap.
    Within about two seconds every attempt goes to the new URL, signed with the new secret only;
    every event arrives once, across both."""
    settings.GATEWAY_WEBHOOK_PER_ENDPOINT = 1
    old, new = Receiver(delay_s=0.4).start(), Receiver().start()
    try:
        merchant = make_merchant()
        endpoint, old_secret = endpoint_for(merchant, old)
        for _ in range(6):
            new_intent(merchant)
        changed = {}

        def change():
            now = timezone.now()
            with transaction.atomic():  # both at once
                endpoints.endpoint_update(endpoint=endpoint, url=new.url, now=now)
                changed["secret"] = endpoints.endpoint_secret_rotate(
                    endpoint=endpoint, overlap=timedelta(0), now=now
                )
            changed["at"] = time.time()

        mover = when(lambda: len(old.received) >= 1, change)
        deliveries_drain(budget_s=20)
        mover.join(30)
        ids = old.ids() + new.ids()
        assert len(ids) == 12 and len(set(ids)) == 12, "each event once, across both URLs"
        late_at_old = [r for r in old.received if r.at > changed["at"] + 2.5]
        assert late_at_old == [], "the old URL got attempts long after the change"
        assert new.received, "the new URL got the rest"
        for r in new.received:
            Webhook(changed["secret"]).verify(r.body, r.headers)  # raises if not signed with it
            signatures = r.headers["webhook-signature"].split()
            assert len(signatures) == 1, "the old secret no longer signs"
        for r in old.received:  # sent before the change, or read between its URL and its secrets
            try:
                Webhook(old_secret).verify(r.body, r.headers)
            except Exception:
                Webhook(changed["secret"]).verify(r.body, r.headers)
        assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
    finally:
        old.stop()
        new.stop()

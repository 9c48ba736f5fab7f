"""The drain under faults it must survive without losing or repeating an attempt: the database going
away for longer than a quick retry while attempts are in flight, and an endpoint whose URL and secret
change while claims for it are queued."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from psycopg import sql
from standardwebhooks import Webhook

from payments.models import WebhookAttempt, WebhookDelivery
from payments.webhooks import claims as claims_module
from payments.webhooks import endpoints
from payments.webhooks.claims import lease
from payments.webhooks.delivery import deliver_due, deliveries_drain
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import endpoint_for

pytestmark = pytest.mark.django_db(transaction=True)


def database_outage(seconds: float) -> None:
    """The test database refuses connections and every session of it is cut, for `seconds`: to the
    drain, the database is down (its statements fail, and so do its attempts to connect again). From a
    connection of its own to the server's `postgres` database, which restores the database whatever
    happens to the test meanwhile."""
    name = connection.settings_dict["NAME"]
    params = connection.get_connection_params() | {"dbname": "postgres"}
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            time.sleep(seconds)
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )


def kill_backend(pid: int) -> None:
    """Cut one session of the test database (e.g. the drain's own), from a second session of it."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


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
    cut = when(lambda: len(receiver.received) >= 3, lambda: database_outage(2.0))
    try:
        deliveries_drain(budget_s=10)
    finally:
        cut.join(30)  # the database is back before anything else runs
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


def test_one_endpoints_nul_byte_answer_does_not_drop_other_merchants_results(receiver):
    """PostgreSQL text refuses NUL: an endpoint answering `ok\\x00` must not fail the record of the
    batch its result is in (every merchant's results in it would be sent again and logged lost)."""
    evil = Receiver(reply=b"ok\x00").start()
    try:
        attacker, victim = make_merchant("evil", account=1), make_merchant("victim", account=2)
        endpoint_for(attacker, evil)
        endpoint_for(victim, receiver)
        for _ in range(3):
            new_intent(attacker)
            new_intent(victim)
        deliveries_drain(budget_s=3)
        assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
        assert WebhookAttempt.objects.filter(response_excerpt="ok\ufffd").count() == 6, "stored, NUL replaced"
    finally:
        evil.stop()


def test_a_connection_lost_right_after_the_claim_statement_spends_no_attempt(receiver, monkeypatch):
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    for _ in range(3):
        new_intent(merchant)  # 6 events
    real = claims_module.secrets_active
    calls = []

    def secrets_active(ids, now):
        if not calls:  # the first read after the first claim statement: the connection dies here
            kill_backend(connection.connection.info.backend_pid)
        calls.append(1)
        return real(ids, now)

    monkeypatch.setattr(claims_module, "secrets_active", secrets_active)
    raised = None
    try:
        deliveries_drain(budget_s=3)
    except OperationalError as exc:
        raised = exc
    monkeypatch.setattr(claims_module, "secrets_active", real)
    connection.close()
    # a later worker, once the leases are over
    deliver_due(now=timezone.now() + lease())
    lost = WebhookAttempt.objects.filter(outcome="lost").count()
    attempts = sorted(WebhookDelivery.objects.values_list("attempts", flat=True))
    problems = []
    if lost or attempts != [1] * 6:
        problems.append(f"{lost} attempts logged lost (never sent), attempts {attempts}")
    if raised is not None:
        problems.append(f"the drain raised at once on one dropped connection: {raised!r}")
    assert not problems, "; ".join(problems)


def test_a_drain_whose_kept_connection_died_meanwhile_connects_again(receiver):
    merchant = make_merchant()
    endpoint_for(merchant, receiver)
    new_intent(merchant)  # two events due
    assert WebhookDelivery.objects.count() == 0  # the worker's connection is open, idle
    kill_backend(connection.connection.info.backend_pid)  # e.g. the database restarted meanwhile
    try:
        report = deliveries_drain(budget_s=3)
        raised = None
    except Exception as exc:
        raised, report = exc, None
    assert raised is None, f"the drain raised at its first statement instead of connecting again: {raised!r}"
    assert report.attempts == 2 and len(receiver.received) == 2


def test_a_change_just_before_an_outage_reaches_queued_claims_within_seconds(settings):
    """The drain cannot read the endpoint during an outage: its senders stop sending queued claims
    once what they know of the endpoint is ENDPOINTS_FRESH_S old, rather than go on to the old URL."""
    settings.GATEWAY_WEBHOOK_PER_ENDPOINT = 4
    old, new = Receiver(delay_s=0.05).start(), Receiver().start()
    try:
        merchant = make_merchant()
        endpoint, _ = endpoint_for(merchant, old)
        for _ in range(40):
            new_intent(merchant)  # 80 events
        changed = {}

        def change_then_outage():
            now = timezone.now()
            with transaction.atomic():
                endpoints.endpoint_update(endpoint=endpoint, url=new.url, now=now)
                endpoints.endpoint_secret_rotate(endpoint=endpoint, overlap=timedelta(0), now=now)
            changed["at"] = time.time()
            old.delay_s = 1.0  # the old host, being retired, slows down
            database_outage(6.0)

        mover = when(lambda: len(old.received) >= 40, change_then_outage)
        try:
            deliveries_drain(budget_s=25)
        finally:
            mover.join(30)  # the database is back before anything else runs
        # sent (the receiver notes a request once it has answered, 1 s later) more than ENDPOINTS_FRESH_S
        # (3 s) after the change, with slack: the drain read the endpoint last at most 1 s before it
        late = [r.at - 1.0 - changed["at"] for r in old.received if r.at - 1.0 > changed["at"] + 3.5]
        assert late == [], (
            f"{len(late)} attempts sent to the old URL, up to {max(late):.1f} s after the change"
        )
        assert len(set(old.ids() + new.ids())) == 80, "every event arrived, at one URL or the other"
    finally:
        old.stop()
        new.stop()

"""Concurrency on real PostgreSQL with real parallel connections (one per thread).

Idempotency, address allocation and settling rely on row locks and unique constraints; these tests
start many requests at the same instant (a barrier) and check that each effect happens exactly once.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from payments import services
from payments.models import ChainObservation, Event, PaymentAddress, PaymentIntent, StateTransition, Wallet
from tests.factories import make_api_key, make_merchant
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"amount": "25.00", "currency": "USDC", "asset": "USDC", "network": "ethereum"}


def run_parallel(n_workers: int, jobs: list, fn) -> list:
    """fn(job) for every job, on n_workers threads released at the same instant by a barrier. Each thread
    has its own database connection (Django's are per thread), closed when the thread ends."""
    slots = [list(enumerate(jobs))[i::n_workers] for i in range(n_workers)]
    slots = [s for s in slots if s]
    barrier = threading.Barrier(len(slots))
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def worker(slot):
        try:
            barrier.wait(timeout=60)
            for index, job in slot:
                results[index] = fn(job)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(jobs))]


def client_for(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_50_simultaneous_creates_with_one_idempotency_key_make_one_intent():
    merchant = make_merchant()
    _, secret = make_api_key(merchant)

    def create(_):
        response = client_for(secret).post(
            "/api/v1/payment-intents", BODY, format="json", HTTP_IDEMPOTENCY_KEY="same-key"
        )
        return response.status_code, response.json()["id"]

    results = run_parallel(50, list(range(50)), create)
    assert Counter(status for status, _ in results) == {201: 50}
    assert len({intent_id for _, intent_id in results}) == 1
    assert PaymentIntent.objects.count() == 1
    assert list(
        PaymentAddress.objects.filter(claimed_at__isnull=False).values_list("intent__pk", flat=True)
    ) == [results[0][1]]
    assert Event.objects.count() == 2


def test_simultaneous_creates_with_one_key_and_other_bodies_make_one_intent():
    merchant = make_merchant()
    _, secret = make_api_key(merchant)

    def create(i):
        body = BODY | {"amount": f"{1 + i % 2}.00"}
        response = client_for(secret).post(
            "/api/v1/payment-intents", body, format="json", HTTP_IDEMPOTENCY_KEY="k"
        )
        return response.status_code

    results = Counter(run_parallel(20, list(range(20)), create))
    assert set(results) == {201, 422}
    assert PaymentIntent.objects.count() == 1


def test_200_simultaneous_creates_get_200_distinct_addresses():
    merchant = make_merchant()
    _, secret = make_api_key(merchant)

    def create(i):
        response = client_for(secret).post(
            "/api/v1/payment-intents", BODY | {"merchant_order_id": f"o{i}"}, format="json"
        )
        assert response.status_code == 201, response.json()
        return response.json()["address"]

    # 200 creates on 50 connections at once (the embedded server allows 100 connections in all)
    addresses = run_parallel(50, list(range(200)), create)
    assert len(set(addresses)) == 200
    claimed = PaymentAddress.objects.filter(claimed_at__isnull=False)
    assert sorted(claimed.values_list("address", flat=True)) == sorted(a.lower() for a in addresses)
    assert claimed.filter(intent__isnull=True).count() == 0
    # The pool was derived in order, no index twice or skipped, and refills did not pile up: creates
    # that found the pool empty at once waited for one refill instead of each deriving a batch.
    derived = sorted(PaymentAddress.objects.values_list("derivation_index", flat=True))
    next_index = merchant.wallets.get(chain="evm").next_index
    assert derived == list(range(next_index))
    assert next_index <= 200 + 2 * settings.GATEWAY_ADDRESS_POOL_BATCH


def test_concurrent_observations_produce_each_transition_and_event_once():
    now = timezone.now()
    intent = new_intent(now=now)
    services.chain_tip_record(network_code="ethereum", height=120, block_hash="0xb120", now=now)
    halves = [
        transfer(intent, tx="0x01", amount=5_000_000, **block(100, now)),
        transfer(intent, tx="0x02", amount=5_000_000, **block(101, now)),
    ]

    def record(i):
        services.observation_record(transfer=halves[i % 2], now=now)

    run_parallel(20, list(range(40)), record)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "paid"
    assert ChainObservation.objects.count() == 2
    transitions = list(intent.transitions.order_by("id").values_list("from_state", "to_state"))
    # either half may land first (underpaid on the way) but each transition happens once
    assert transitions[0] == ("created", "awaiting_payment") and transitions[-1][1] == "paid"
    assert len(transitions) == len(set(transitions))
    assert StateTransition.objects.filter(intent=intent).count() == len(transitions)
    sequences = list(intent.events.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))
    assert intent.events.filter(type="payment.paid").count() == 1
    assert len(sequences) == 1 + len(transitions)


def wallet_lock_nowait(wallet_id: int) -> None:
    """Take the wallet's row lock on this thread's own connection, or raise LockNotAvailable at once
    (while a top-up or a refill holds it); released when the statement's transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM payments_wallet WHERE id = %s FOR NO KEY UPDATE NOWAIT", [wallet_id])


def test_the_pool_top_up_derives_with_the_wallet_unlocked_and_writes_in_batches(monkeypatch):
    """A create that finds the pool empty waits for the wallet's row lock: the beat's top-up must not
    hold it while it derives (it once derived the whole pool under it, stalling every create of the
    merchant for hundreds of milliseconds each time the pool ran dry)."""
    from payments.services import addresses

    monkeypatch.setattr(settings, "GATEWAY_ADDRESS_POOL_BATCH", 4)
    wallet = make_merchant().wallets.get(chain="evm")  # and a wallet per Bitcoin-family network
    real_derive, batches = addresses._derive, []

    def derive(account_key, chain, hrp, first, count):
        run_parallel(1, [None], lambda _: wallet_lock_nowait(wallet.pk))
        if chain == "evm":
            batches.append((first, count))
        return real_derive(account_key, chain, hrp, first, count)

    monkeypatch.setattr(addresses, "_derive", derive)
    assert services.address_pools_top_up(now=timezone.now(), size=10) == 10 * Wallet.objects.count()
    assert batches == [(0, 4), (4, 4), (8, 2)]
    wallet.refresh_from_db()
    assert wallet.next_index == 10
    pool = PaymentAddress.objects.filter(wallet=wallet, claimed_at__isnull=True)
    assert sorted(pool.values_list("derivation_index", flat=True)) == list(range(10))


def test_creates_that_find_the_pool_empty_together_derive_only_what_they_write(monkeypatch):
    """Creates that find the pool empty at once: one refills it under the wallet's lock, the others wait
    for that batch and claim from it. Every address derived is written (a refill that derived before it
    locked had each racing create derive a batch of its own, all but one thrown away: a review counted
    10 batches derived for 1 written)."""
    from payments.services import addresses

    monkeypatch.setattr(settings, "GATEWAY_ADDRESS_POOL_BATCH", 20)
    merchant = make_merchant()
    wallet = merchant.wallets.get(chain="evm")
    PaymentAddress.objects.filter(wallet=wallet, claimed_at__isnull=True).update(claimed_at=timezone.now())
    start = Wallet.objects.get(pk=wallet.pk).next_index
    real_derive, derived = addresses._derive, []

    def derive(account_key, chain, hrp, first, count):
        derived.append(count)
        return real_derive(account_key, chain, hrp, first, count)

    monkeypatch.setattr(addresses, "_derive", derive)
    _, secret = make_api_key(merchant)
    responses = run_parallel(
        8, list(range(8)), lambda _: client_for(secret).post("/api/v1/payment-intents", BODY, format="json")
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.content[:200] for r in responses]
    assert len({r.json()["address"] for r in responses}) == 8
    wallet.refresh_from_db()
    assert derived and sum(derived) == wallet.next_index - start

"""The checkout's rate limit cannot be evicted or bypassed: every request counts per client address
before its token is looked up, and the counts live in a store that a flood of new keys does not empty
(local counters that only expire, or Redis)."""

from __future__ import annotations

import os
import secrets
import uuid

import pytest
from django.core.cache import caches
from django.test import Client

from payments import ratelimit
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db

WINDOW_START = 1_800_000_000.0  # one fixed-window minute for the whole test (a multiple of 60)


@pytest.fixture
def one_window(monkeypatch):
    monkeypatch.setattr(ratelimit.time, "time", lambda: WINDOW_START + 1)
    caches["ratelimit"].clear()
    yield
    caches["ratelimit"].clear()


def flood_with_random_tokens(count: int) -> set[int]:
    """`count` requests for random tokens, each from another address (as a botnet or an IPv6 range
    would send them): more new counters than Django's default local-memory cache holds (300)."""
    codes = set()
    for i in range(count):
        client = Client(REMOTE_ADDR=f"198.18.{i // 250}.{i % 250 + 1}")
        codes.add(client.get(f"/pay/{secrets.token_urlsafe(24)}").status_code)
    return codes


def test_the_default_store_for_counts_is_the_non_evicting_local_one():
    assert isinstance(caches["ratelimit"], ratelimit.LocalCounterCache)  # without a Redis URL


def limited_client_is_still_refused(settings) -> None:
    settings.GATEWAY_CHECKOUT_RATE_PER_MINUTE = 3
    settings.GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE = 3
    intent = new_intent()
    real = Client(REMOTE_ADDR="203.0.113.7")
    assert [real.get(f"/pay/{intent.checkout_token}").status_code for _ in range(3)] == [200] * 3
    assert flood_with_random_tokens(320) == {404}  # each address stays within its own budget
    assert real.get(f"/pay/{intent.checkout_token}").status_code == 429
    assert Client(REMOTE_ADDR="203.0.113.8").get(f"/pay/{intent.checkout_token}").status_code == 200


def test_a_flood_of_random_tokens_does_not_evict_a_clients_count(settings, one_window):
    # Django's default local-memory cache holds 300 entries and culls a third when full: before, this
    # flood pushed the real client's count out and its next request was served again.
    limited_client_is_still_refused(settings)


def test_unknown_tokens_on_status_count_per_address_and_get_429(settings, one_window):
    settings.GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE = 5
    settings.GATEWAY_CHECKOUT_POLLS_PER_MINUTE = 90
    prober = Client(REMOTE_ADDR="203.0.113.9")
    codes = [prober.get(f"/pay/{secrets.token_urlsafe(24)}/status").status_code for _ in range(8)]
    assert codes == [404] * 5 + [429] * 3  # before: every unknown token had its own budget (404 for ever)
    refused = prober.get(f"/pay/{secrets.token_urlsafe(24)}/status")
    assert refused.json()["error"]["code"] == "rate_limited" and 0 < int(refused["Retry-After"]) <= 60
    # a real page's polling from that address is refused too, and another address is unaffected
    intent = new_intent()
    assert prober.get(f"/pay/{intent.checkout_token}/status").status_code == 429
    assert Client(REMOTE_ADDR="203.0.113.10").get(f"/pay/{intent.checkout_token}/status").status_code == 200


def test_the_local_counter_store_drops_only_expired_windows(settings, monkeypatch):
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "payments.ratelimit.LocalCounterCache",
            "LOCATION": "ratelimit-sweep-test",
            "OPTIONS": {"MAX_ENTRIES": 50},
        },
    }
    cache = caches["ratelimit"]
    cache.clear()
    now = [WINDOW_START + 1]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    assert ratelimit.hit("t", "client", 1) is None
    assert ratelimit.hit("t", "client", 1) is not None
    for i in range(150):  # three times MAX_ENTRIES, all in the same window
        ratelimit.hit("t", f"other-{i}", 1)
    assert ratelimit.hit("t", "client", 1) is not None, "a live count was evicted"
    assert len(cache._cache) == 151
    now[0] += 180  # three windows later: the old ones expired and go at the next sweep
    for i in range(200):
        ratelimit.hit("t", f"later-{i}", 1)
    assert len(cache._cache) <= 200 + 1  # the expired windows went; only this window's counts are left
    assert ratelimit.hit("t", "client", 1) is None  # a new window
    cache.clear()


@pytest.fixture
def redis_url():
    """The Redis service at 127.0.0.1:6379 (production's store for the counts). In CI it must be there:
    a missing Redis fails the test; elsewhere it is skipped with the reason."""
    import redis

    url = "redis://127.0.0.1:6379/3"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at 127.0.0.1:6379 is needed for this test (CI=true): {exc}")
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({exc}); CI runs this test against the Redis service")
    return url


def test_counts_in_redis_survive_a_flood_and_expire_with_their_window(settings, one_window, redis_url):
    import redis

    prefix = f"gateway-test-{uuid.uuid4().hex}"
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": prefix,
        },
    }
    server = redis.Redis.from_url(redis_url)
    try:
        limited_client_is_still_refused(settings)
        keys = server.keys(f"{prefix}:*")
        assert len(keys) >= 320  # the counts are in Redis, one per address
        ttls = {server.ttl(k) for k in keys}
        assert all(0 < ttl <= 120 for ttl in ttls), ttls  # each window expires on its own
    finally:
        for key in server.scan_iter(f"{prefix}:*"):
            server.delete(key)


def test_an_ipv6_client_counts_per_64_not_per_address(settings, one_window):
    """Before: each address of one /64 had its own budget, so a subscriber could rotate through its
    2^64 addresses and never be limited."""
    settings.GATEWAY_CHECKOUT_RATE_PER_MINUTE = 3
    codes = [
        Client(REMOTE_ADDR=f"2001:db8:1:2::{i:x}").get(f"/pay/{secrets.token_urlsafe(24)}").status_code
        for i in range(1, 6)
    ]
    assert codes == [404, 404, 404, 429, 429]
    other_64 = Client(REMOTE_ADDR="2001:db8:1:3::1")
    assert other_64.get(f"/pay/{secrets.token_urlsafe(24)}").status_code == 404
    # an IPv4 client keeps its own address, also when it arrives mapped into IPv6
    assert ratelimit.client_key("::ffff:203.0.113.7") == ratelimit.client_key("203.0.113.7") == "203.0.113.7"

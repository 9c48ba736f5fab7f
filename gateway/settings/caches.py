"""Caches: the default cache and the rate limits' own."""

import os

# Caches. Local memory (per process) unless CACHE_URL names a Redis server shared by every worker
# (production: redis://127.0.0.1:6379/1). Rate-limit counts have their own alias, so that nothing else
# (and no flood of new keys) can evict them: Redis at GATEWAY_RATELIMIT_CACHE_URL (else CACHE_URL), which
# must not evict keys (maxmemory-policy noeviction); otherwise per-process counters that only expire.
_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"
CACHE_URL = os.environ.get("CACHE_URL", "")
RATELIMIT_CACHE_URL = os.environ.get("GATEWAY_RATELIMIT_CACHE_URL", "") or CACHE_URL
CACHES = {
    "default": (
        {"BACKEND": _REDIS_CACHE, "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    ),
    "ratelimit": (
        {"BACKEND": _REDIS_CACHE, "LOCATION": RATELIMIT_CACHE_URL, "KEY_PREFIX": "gateway"}
        if RATELIMIT_CACHE_URL
        else {
            "BACKEND": "payments.ratelimit.LocalCounterCache",
            "LOCATION": "ratelimit",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    ),
}

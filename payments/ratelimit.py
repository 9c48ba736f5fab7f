"""A fixed-window rate limit per client address, for the public checkout endpoints (the merchant API is
limited per API key by DRF's throttling). Counts live in Django's cache: per process with the default
local-memory cache, shared by every worker with `CACHE_URL=redis://...`."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse


def client_address(request: HttpRequest) -> str:
    """The peer address; behind a reverse proxy the operator lists it in GATEWAY_TRUSTED_PROXIES and the
    last address it appended to X-Forwarded-For is used."""
    peer = request.META.get("REMOTE_ADDR", "")
    if peer in settings.GATEWAY_TRUSTED_PROXIES:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-1]
    return peer


def hit(name: str, ident: str, limit: int, window_s: int = 60) -> int | None:
    """Count one request of `ident` in the current window; None if within `limit`, else the seconds until
    the window ends (Retry-After)."""
    now = time.time()
    key = f"rl:{name}:{ident}:{int(now // window_s)}"
    cache.add(key, 0, timeout=window_s * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=window_s * 2)
        count = 1
    if count <= limit:
        return None
    return max(1, window_s - int(now) % window_s)


def limited(name: str, per_minute: Callable[[], int]) -> Callable:
    """At most `per_minute()` requests a minute per client address to the view; then 429 with
    Retry-After and the stable code `rate_limited`."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            limit = per_minute()
            wait = hit(name, client_address(request), limit) if limit > 0 else None
            if wait is not None:
                response = JsonResponse(
                    {"error": {"code": "rate_limited", "message": "too many requests; wait a minute"}},
                    status=429,
                )
                response["Retry-After"] = str(wait)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorate

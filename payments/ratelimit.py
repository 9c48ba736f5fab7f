"""A fixed-window rate limit per client address, for the public checkout endpoints (the merchant API is
limited per API key by DRF's throttling). Counts live in Django's cache: per process with the default
local-memory cache, shared by every worker with `CACHE_URL=redis://...`."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _

from .ipnets import contains, networks


def client_address(request: HttpRequest) -> str:
    """The client's address: the peer, or, when the peer is a trusted reverse proxy
    (GATEWAY_TRUSTED_PROXIES: addresses or networks), the nearest address in X-Forwarded-For that is not
    one of them (read right to left, as each proxy appends the address it saw)."""
    chain = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    chain.append(request.META.get("REMOTE_ADDR", ""))
    for address in reversed(chain):
        if not _trusted(address):
            return address
    return chain[0]


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return contains(networks(tuple(settings.GATEWAY_TRUSTED_PROXIES)), ip)


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


def limited(
    name: str, per_minute: Callable[[], int], *, per_token: bool = False, html: bool = False
) -> Callable:
    """At most `per_minute()` requests a minute per client address (and per checkout token with
    `per_token`) to the view; then 429 with Retry-After and the stable code `rate_limited` (a short
    text for a page, `html`)."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            limit = per_minute()
            ident = client_address(request) + (f":{kwargs.get('token', '')}" if per_token else "")
            wait = hit(name, ident, limit) if limit > 0 else None
            if wait is not None:
                if html:
                    response = HttpResponse(
                        _("Too many requests. Please wait a minute, then reload this page."),
                        status=429,
                        content_type="text/plain; charset=utf-8",
                    )
                else:
                    response = JsonResponse(
                        {"error": {"code": "rate_limited", "message": "too many requests; wait a minute"}},
                        status=429,
                    )
                response["Retry-After"] = str(wait)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorate

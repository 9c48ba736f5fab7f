"""A fixed-window rate limit per client address, for the public checkout endpoints (the merchant API is
limited per API key by DRF's throttling, with the same counters).

Counts live in the `ratelimit` cache, never in the general one, so nothing else can push them out:
- production: Redis shared by every worker (`GATEWAY_RATELIMIT_CACHE_URL`, else `CACHE_URL`), a server or
  database that does not evict keys (`maxmemory-policy noeviction`);
- otherwise: `LocalCounterCache`, per process, which drops only expired windows and never a live count.

Every request is counted per client address before the view looks anything up, so requests for unknown
checkout tokens cost the same as real ones and cannot create counters without limit."""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _

from .ipnets import contains, networks

CACHE_ALIAS = "ratelimit"


class LocalCounterCache(LocMemCache):
    """Local-memory counters that are not evicted while their window lasts (Django's LocMemCache culls
    the least recently used third of its entries when full, whatever their expiry, so a flood of new
    keys would reset everyone's counts). When full, only expired entries go; if every entry is live the
    store grows, and `MAX_ENTRIES` is where the next sweep happens, not a cap. Entries expire with their
    window, so the store holds at most the keys of the last two windows."""

    def _cull(self) -> None:
        now = time.time()
        expired = [key for key, ends in self._expire_info.items() if ends is not None and ends <= now]
        for key in expired:
            self._delete(key)
        self._max_entries = max(self._max_entries, 2 * len(self._cache))


def client_address(request: HttpRequest) -> str:
    """The client's address: the peer, or, when the peer is a trusted reverse proxy
    (GATEWAY_TRUSTED_PROXIES: addresses or networks), the nearest address in X-Forwarded-For that is not
    one of them (read right to left, as each proxy appends the address it saw)."""
    chain = [_plain(a.strip()) for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    chain.append(_plain(request.META.get("REMOTE_ADDR", "")))
    for address in reversed(chain):
        if not _trusted(address):
            return address
    return chain[0]


def client_key(address: str) -> str:
    """What a client's count is kept under: its IPv4 address, or the /64 its IPv6 address lies in (one
    subscriber usually holds a whole /64, and could otherwise rotate through it for fresh budgets)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _plain(address: str) -> str:
    """An IPv4 address written as IPv6 (`::ffff:127.0.0.1`, what a dual-stack socket reports for an IPv4
    peer) as the IPv4 address it is, so that lists of IPv4 networks match it; anything else unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return contains(networks(tuple(settings.GATEWAY_TRUSTED_PROXIES)), ip)


def hit(name: str, ident: str, limit: int, window_s: int = 60) -> int | None:
    """Count one request of `ident` in the current window; None if within `limit`, else the seconds until
    the window ends (Retry-After)."""
    cache = caches[CACHE_ALIAS]
    now = time.time()
    # hashed: a client-chosen part (a token from the URL) never makes a long or odd cache key
    digest = hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()
    key = f"rl:{name}:{digest}:{int(now // window_s)}"
    cache.add(key, 0, timeout=window_s * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr (the window's last instant)
        cache.set(key, 1, timeout=window_s * 2)
        count = 1
    if count <= limit:
        return None
    return max(1, window_s - int(now) % window_s)


def _refused(wait: int, html: bool) -> HttpResponse:
    if html:
        response = HttpResponse(
            _("Too many requests. Please wait a minute, then reload this page."),
            status=429,
            content_type="text/plain; charset=utf-8",
        )
    else:
        response = JsonResponse(
            {"error": {"code": "rate_limited", "message": "too many requests; wait a minute"}}, status=429
        )
    response["Retry-After"] = str(wait)
    return response


def limited(
    name: str,
    per_minute: Callable[[], int],
    *,
    per_token: Callable[[], int] | None = None,
    html: bool = False,
) -> Callable:
    """At most `per_minute()` requests a minute per client address to the view, counted before the view
    runs (an unknown token counts like a real one); with `per_token`, also at most `per_token()` a minute
    per client address and checkout token. Beyond either: 429 with Retry-After and the stable code
    `rate_limited` (a short text for a page, `html`). A limit of 0 is no limit."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            address = client_key(client_address(request))
            limit = per_minute()
            wait = hit(name, address, limit) if limit > 0 else None
            if wait is None and per_token is not None:
                token_limit = per_token()
                if token_limit > 0:
                    wait = hit(f"{name}:token", f"{address}:{kwargs.get('token', '')}", token_limit)
            if wait is not None:
                return _refused(wait, html)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate

"""Reference data (assets, networks, rate sources) as services read it: a short per-process cache, and
the one check of what a payment may be made in (an enabled asset on a watched network)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from ..errors import InvalidRequest
from ..models import (
    Asset,
    Network,
    NetworkAsset,
)
from ..pricing import (
    FixedRateSource,
    HttpTickerRateSource,
    PegRateSource,
    RateSource,
)

# --- reference data ---------------------------------------------------------------------------------


# Reference data changes rarely (in the admin); a per-process cache with a short lifetime saves a query
# on every create, and an admin edit takes effect within REFERENCE_CACHE_S.
REFERENCE_CACHE_S = 30.0
_reference_cache: dict[tuple, tuple[float, Any]] = {}


def _cached(key: tuple, load):
    hit = _reference_cache.get(key)
    clock = time.monotonic()
    if hit is not None and clock - hit[0] < REFERENCE_CACHE_S:
        return hit[1]
    value = load()
    _reference_cache[key] = (clock, value)
    return value


def reference_cache_clear() -> None:
    _reference_cache.clear()


def network_asset_resolve(*, asset_code: str, network_code: str) -> NetworkAsset:
    """The enabled asset on an enabled network that has a node (is watched), or an error with a stable code
    saying which part is wrong."""
    na = _cached(
        ("network_asset", asset_code, network_code), lambda: _network_asset_load(asset_code, network_code)
    )
    if na is not None and na.enabled and na.network.watched:
        return na
    reference_cache_clear()  # an error answer is never served from a stale cache
    na = _network_asset_load(asset_code, network_code)
    if na is not None and na.enabled and na.network.watched:
        return na
    network = na.network if na else Network.objects.filter(code=network_code).first()
    if network is None:
        raise InvalidRequest(f"unknown network {network_code!r}", code="unknown_network", param="network")
    if not network.enabled:
        raise InvalidRequest(f"network {network_code} is disabled", code="network_disabled", param="network")
    if not network.watched:
        # No node: payments on it would never be seen.
        raise InvalidRequest(
            f"network {network_code} is not watched by this gateway (no node configured)",
            code="network_not_watched",
            param="network",
        )
    if na is None:
        if not Asset.objects.filter(code=asset_code).exists():
            raise InvalidRequest(f"unknown asset {asset_code!r}", code="unknown_asset", param="asset")
        raise InvalidRequest(
            f"{asset_code} is not available on {network_code}", code="asset_not_on_network", param="asset"
        )
    raise InvalidRequest(f"{na} is disabled", code="asset_disabled", param="asset")


def _network_asset_load(asset_code: str, network_code: str) -> NetworkAsset | None:
    return (
        NetworkAsset.objects.select_related("asset", "network")
        .filter(network__code=network_code, asset__code=asset_code)
        .first()
    )


def default_rate_source() -> RateSource:
    pegs = _cached(
        ("pegs",), lambda: dict(Asset.objects.exclude(peg_currency="").values_list("code", "peg_currency"))
    )
    if settings.GATEWAY_RATE_SOURCE == "fixed":
        fallback: RateSource = FixedRateSource.parse(settings.GATEWAY_FIXED_RATES)
    else:
        fallback = HttpTickerRateSource(
            settings.GATEWAY_RATE_SOURCE_URL, timeout_s=settings.GATEWAY_RATE_SOURCE_TIMEOUT_S
        )
    return PegRateSource(pegs, fallback)

"""Lists of IP networks from the operator's settings (webhook networks allowed despite the SSRF guard,
trusted reverse proxies), parsed once, and membership tests on them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=32)
def networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    """`("127.0.0.0/8", "::1", ...)` as networks (a bare address is a one-address network)."""
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in spec if s.strip())


def contains(nets: Iterable[Network], ip: Address) -> bool:
    return any(ip.version == net.version and ip in net for net in nets)

"""The SSRF guard: a webhook URL must be https and every address its host resolves to must be public,
unless the operator allows plain http (`GATEWAY_WEBHOOK_ALLOW_HTTP`) or some private networks
(`GATEWAY_WEBHOOK_ALLOWED_NETWORKS`, e.g. `127.0.0.0/8` for the tests and the demo).

The check runs when an endpoint is saved and again before every attempt, on the addresses the attempt
will connect to (the transport connects to the checked address itself), so a name that resolves to a
public address at registration and to a private one later (DNS rebinding) is refused at send time.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

from payments.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class UrlRefused(InvalidRequest):
    code = "webhook_url_refused"


@dataclass(frozen=True)
class Destination:
    url: SplitResult
    host: str
    port: int
    addresses: tuple[str, ...]  # all checked; the transport connects to the first


def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@lru_cache(maxsize=32)
def _allowed_networks(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in spec if s.strip())


def address_allowed(address: str) -> bool:
    """A public unicast address, or one inside a network the operator allows."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network in _allowed_networks(tuple(settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS)):
        if ip.version == network.version and ip in network:
            return True
    return ip.is_global and not ip.is_multicast


def url_parse(url: str) -> tuple[SplitResult, str, int]:
    """The static part of the check: scheme, host, port, no credentials in the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("the webhook URL is malformed", param="url") from None
    allowed = ("https", "http") if settings.GATEWAY_WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed:
        raise UrlRefused(f"the webhook URL must use {' or '.join(allowed)}", param="url")
    if not parts.hostname:
        raise UrlRefused("the webhook URL has no host", param="url")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the webhook URL must not carry credentials", param="url")
    return parts, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def destination(url: str, resolve: Resolver = system_resolve) -> Destination:
    """Check the URL and where it leads now; raises UrlRefused."""
    parts, host, port = url_parse(url)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):
        raise UrlRefused(f"the webhook host {host} does not resolve", param="url") from None
    if not addresses:
        raise UrlRefused(f"the webhook host {host} does not resolve", param="url")
    refused = [a for a in addresses if not address_allowed(a)]
    if refused:
        raise UrlRefused(
            f"the webhook host {host} resolves to a private or reserved address ({refused[0]})", param="url"
        )
    return Destination(url=parts, host=host, port=port, addresses=tuple(addresses))

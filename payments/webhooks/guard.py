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
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

from payments.errors import InvalidRequest
from payments.ipnets import contains, networks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class UrlRefused(InvalidRequest):
    code = "webhook_url_refused"


@dataclass(frozen=True)
class Destination:
    url: SplitResult
    host: str  # ASCII (IDNA) form: what goes into the Host header, SNI and the certificate check
    port: int
    addresses: tuple[str, ...]  # all checked; the transport connects to them in order

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.port}"

    @property
    def target(self) -> str:
        return (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")


# Refused whatever `is_global` says (it has changed between Python versions), and IPv6 forms that embed
# an IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible, IPv4-translated) that could reach a private one.
_DENIED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
        "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip


def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_allowed(address: str) -> bool:
    """A public unicast address, or one inside a network the operator allows."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if contains(networks(tuple(settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS)), ip):
        return True
    if contains(_DENIED, ip):
        return False
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
    if port == 0:
        raise UrlRefused("the webhook URL's port is between 1 and 65535", param="url")
    try:  # an internationalised name travels in its ASCII form (Host header, SNI, certificate)
        host = (
            parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
        )
    except UnicodeError:
        raise UrlRefused("the webhook URL's host name is not valid", param="url") from None
    return parts, host, port or (443 if parts.scheme == "https" else 80)


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

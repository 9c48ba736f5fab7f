"""The HTTP client for webhook attempts (urllib3, keep-alive pools).

Each attempt resolves the host, runs the SSRF guard on the addresses, and connects to the checked
address itself (TLS still verifies the certificate for the host name, sent as SNI), so nothing can swap
the address between the check and the connection. Redirects are not followed: a 3xx is a failure.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import certifi
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from . import guard

EXCERPT_BYTES = 1024
_READ_LIMIT = 64 * 1024  # read at most this much of a response; a longer one closes its connection
USER_AGENT = "gateway-webhooks/1"


@dataclass(frozen=True)
class Result:
    status: int | None
    latency_ms: int
    error: str = ""
    excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Transport:
    """Thread-safe: worker threads share the connection pools (one per host, address and port)."""

    def __init__(
        self,
        *,
        timeout_s: float,
        resolve: guard.Resolver = guard.system_resolve,
        pool_size: int = 16,
        max_pools: int = 512,
    ):
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self.resolve = resolve
        self.pool_size = pool_size
        self.max_pools = max_pools
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Result:
        started = time.monotonic()

        def result(status: int | None = None, error: str = "", excerpt: str = "") -> Result:
            return Result(status, round((time.monotonic() - started) * 1000), error[:300], excerpt)

        try:
            dest = guard.destination(url, self.resolve)
        except guard.UrlRefused as exc:
            return result(error=f"refused by the SSRF guard: {exc.message}")
        target = dest.url.path or "/"
        if dest.url.query:
            target += "?" + dest.url.query
        host_header = dest.url.netloc.rsplit("@", 1)[-1]
        pool = self._pool(dest.url.scheme, dest.addresses[0], dest.port, dest.host)
        try:
            response = pool.urlopen(
                "POST",
                target,
                body=body,
                headers={
                    **headers,
                    "Host": host_header,
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                },
                retries=False,
                redirect=False,
                timeout=self.timeout,
                preload_content=False,
                release_conn=False,
                assert_same_host=False,
            )
        except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
            return result(error=f"timeout: {exc}")
        except NewConnectionError as exc:
            return result(error=f"connection failed: {exc}")
        except SSLError as exc:
            return result(error=f"TLS error: {exc}")
        except (ProtocolError, urllib3.exceptions.HTTPError, OSError) as exc:
            return result(error=f"{type(exc).__name__}: {exc}")
        try:
            data = response.read(_READ_LIMIT, decode_content=False)
        except (ReadTimeoutError, ProtocolError, OSError) as exc:
            response.close()
            response.release_conn()
            return result(response.status, error=f"reading the response: {exc}")
        if len(data) >= _READ_LIMIT:
            response.close()  # do not drain an unbounded body to keep the connection
        response.release_conn()
        excerpt = data[:EXCERPT_BYTES].decode("utf-8", "replace")
        error = "" if 200 <= response.status < 300 else f"HTTP {response.status}"
        return result(response.status, error=error, excerpt=excerpt)

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, address, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            if scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    port,
                    maxsize=self.pool_size,
                    server_hostname=host,
                    assert_hostname=host,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=certifi.where(),
                )
            else:
                pool = urllib3.HTTPConnectionPool(address, port, maxsize=self.pool_size)
            self._pools[key] = pool
            while len(self._pools) > self.max_pools:
                _, old = self._pools.popitem(last=False)
                old.close()
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

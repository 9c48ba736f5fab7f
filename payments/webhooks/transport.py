"""The HTTP client for webhook attempts (urllib3, keep-alive pools).

Each attempt resolves the host, runs the SSRF guard on the addresses, and connects to a checked address
itself (trying the next one if a connection fails; TLS still verifies the certificate for the host name,
sent as SNI), so nothing can swap the address between the check and the connection. Redirects are not
followed: a 3xx is a failure. An attempt has a total deadline (`timeout_s`, connection to last byte read):
a watchdog shuts the socket of an attempt past it, so an endpoint that trickles its answer cannot hold a
thread, nor outlive the claim's lease.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
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


class _Watchdog:
    """Shuts the socket of an attempt that passes its deadline (the connection registers itself when it
    sends a request on the attempt's thread)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, HTTPConnection | None]] = {}  # thread id -> (deadline, conn)
        self._expired: set[int] = set()
        self._thread: threading.Thread | None = None

    def begin(self, deadline: float) -> None:
        with self._lock:
            self._active[threading.get_ident()] = (deadline, None)
            self._expired.discard(threading.get_ident())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-watchdog", daemon=True)
                self._thread.start()

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            entry = self._active.get(threading.get_ident())
            if entry is not None:
                self._active[threading.get_ident()] = (entry[0], conn)

    def end(self) -> bool:
        """Stop watching this thread's attempt; True if the watchdog cut it."""
        with self._lock:
            self._active.pop(threading.get_ident(), None)
            expired = threading.get_ident() in self._expired
            self._expired.discard(threading.get_ident())
            return expired

    def _run(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self._lock:
                late = [(t, c) for t, (d, c) in self._active.items() if d <= now and t not in self._expired]
                for thread_id, _ in late:
                    self._expired.add(thread_id)
            for _, conn in late:
                sock = getattr(conn, "sock", None) if conn is not None else None
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


def _watched(base: type[HTTPConnection], watchdog: _Watchdog) -> type[HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type, misc]
        def connect(self):
            watchdog.attach(self)  # before connecting: a slow TLS handshake is cut too
            super().connect()

        def request(self, *args, **kwargs):
            watchdog.attach(self)
            return super().request(*args, **kwargs)

    return Watched


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
        self.timeout_s = timeout_s
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self.resolve = resolve
        self.pool_size = pool_size
        self.max_pools = max_pools
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._http = _watched(HTTPConnection, self._watchdog)
        self._https = _watched(HTTPSConnection, self._watchdog)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Result:
        """One attempt; never raises (an unexpected error is the attempt's error)."""
        started = time.monotonic()

        def result(status: int | None = None, error: str = "", excerpt: str = "") -> Result:
            return Result(status, round((time.monotonic() - started) * 1000), error[:300], excerpt)

        self._watchdog.begin(started + self.timeout_s)
        try:
            outcome = self._post(url, body, headers)
        except Exception as exc:
            outcome = (None, f"{type(exc).__name__}: {exc}", "")
        if self._watchdog.end():
            return result(None, f"timeout: no complete answer within {self.timeout_s:g} s")
        return result(*outcome)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str, str]:
        try:
            dest = guard.destination(url, self.resolve)
        except guard.UrlRefused as exc:
            return None, f"refused by the SSRF guard: {exc.message}", ""
        headers = {
            **headers,
            "Host": dest.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        error = ""
        for address in dest.addresses:
            pool = self._pool(dest.url.scheme, address, dest.port, dest.host)
            try:
                response = pool.urlopen(
                    "POST",
                    dest.target,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    timeout=self.timeout,
                    preload_content=False,
                    release_conn=False,
                    assert_same_host=False,
                )
            except NewConnectionError as exc:  # (a ConnectTimeoutError subclass) the next address
                error = f"connection failed: {exc}"
                continue
            except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
                return None, f"timeout: {exc}", ""
            except SSLError as exc:
                return None, f"TLS error: {exc}", ""
            except (ProtocolError, urllib3.exceptions.HTTPError, OSError) as exc:
                return None, f"{type(exc).__name__}: {exc}", ""
            return self._read(response)
        return None, error, ""

    @staticmethod
    def _read(response) -> tuple[int | None, str, str]:
        try:
            data = response.read(_READ_LIMIT, decode_content=False)
        except (ReadTimeoutError, ProtocolError, OSError) as exc:
            response.close()
            response.release_conn()
            return response.status, f"reading the response: {exc}", ""
        if len(data) >= _READ_LIMIT:
            response.close()  # do not drain an unbounded body to keep the connection
        response.release_conn()
        excerpt = data[:EXCERPT_BYTES].decode("utf-8", "replace")
        error = "" if 200 <= response.status < 300 else f"HTTP {response.status}"
        return response.status, error, excerpt

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
                pool.ConnectionCls = self._https
            else:
                pool = urllib3.HTTPConnectionPool(address, port, maxsize=self.pool_size)
                pool.ConnectionCls = self._http
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

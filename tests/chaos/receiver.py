"""A Standard Webhooks receiver that fails, hangs past the gateway's timeout, and hangs for good; it
verifies every request's signature as it arrives (as a merchant's receiver does: the library refuses a
timestamp more than five minutes old, so a check at the end of a long run could not)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

HUNG = -1  # a request the receiver answered only after the gateway's timeout (a failed attempt for it)
HUNG_FOR_GOOD = -2  # a request never answered while the run lasted


@dataclass
class FlakyReceiver:
    """Answers 500 to `fail` of the requests, hangs `hang_s` (past the gateway's attempt timeout) on `hang`
    of them and does not answer at all on `hang_for_good` of them until it is stopped; 200 otherwise.
    Records every request (headers, body, status, signature valid) when it ends; `secret` is the
    endpoint's signing secret, set once the endpoint exists (before any event is dispatched to it)."""

    fail: float = 0.10
    hang: float = 0.04
    hang_for_good: float = 0.02
    hang_s: float = 4.0
    seed: int = 7
    secret: str | None = None
    received: list[tuple[dict, bytes, int, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def start(self) -> FlakyReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._decide()
                if status == HUNG_FOR_GOOD:
                    receiver._record(headers, body, status)
                    receiver.stopping.wait()  # the gateway times out and retries; this never answers
                    self.close_connection = True
                    return
                if status == HUNG:
                    time.sleep(receiver.hang_s)  # the gateway gives up first
                receiver._record(headers, body, status)
                try:
                    self.send_response(500 if status == 500 else 200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _decide(self) -> int:
        with self.lock:
            roll = self.rng.random()
        if roll < self.fail:
            return 500
        if roll < self.fail + self.hang:
            return HUNG
        if roll < self.fail + self.hang + self.hang_for_good:
            return HUNG_FOR_GOOD
        return 200

    def _record(self, headers: dict, body: bytes, status: int) -> None:
        try:
            Webhook(self.secret).verify(body, headers)
            valid = True
        except Exception:
            valid = False
        with self.lock:
            self.received.append((headers, body, status, valid))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def heal(self) -> None:
        """From now on every request is answered 200 at once (requests already hung stay hung)."""
        with self.lock:
            self.fail = self.hang = self.hang_for_good = 0.0

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

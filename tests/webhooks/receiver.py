"""A local webhook receiver (a real HTTP/1.1 server on 127.0.0.1, keep-alive) whose answers a test
scripts: a queue of status codes to answer with, and an optional gate that holds requests."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived
    status: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int = 0
    answers: deque[int] = field(default_factory=deque)  # next statuses; 200 once empty
    default_status: int = 200
    delay_s: float = 0.0
    reply: bytes | None = None  # the body of every answer, when set (else a short one by status)
    gate: threading.Event | None = None  # when set up, requests wait for it to be set
    arrived: threading.Event = field(default_factory=threading.Event)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: set = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/gateway?source=test"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.arrived.set()
                if receiver.gate is not None:
                    receiver.gate.wait(30)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver._lock:
                    status = receiver.answers.popleft() if receiver.answers else receiver.default_status
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.time(), status)
                    )
                if receiver.reply is not None:
                    reply = receiver.reply
                else:
                    reply = b'{"received": true}' if status < 300 else b"receiver says no"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:  # the client gave up (a timeout under test): nothing to answer
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:  # keep-alive connections too: a stopped receiver answers nothing
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()

    def ids(self) -> list[str]:
        with self._lock:
            return [r.headers["webhook-id"] for r in self.received]

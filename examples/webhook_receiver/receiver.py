"""A small, complete webhook receiver for the gateway, in one file of Django (see docs/WEBHOOKS.md).

It does what a receiver should:
  1. verify the signature on the raw body (Standard Webhooks, with the `whsec_` secret);
  2. store the raw event under its unique id (a duplicate is a no-op) and answer 200 at once;
  3. process stored events in a worker, idempotently, ignoring a stale event by the payment's sequence;
  4. catch up with `GET /api/v1/events?after=<last id>` after downtime.

    python receiver.py register --gateway http://127.0.0.1:8000 --api-key sk_... \\
        --url http://127.0.0.1:8010/webhooks          # prints the endpoint's secret, once
    WEBHOOK_SECRET=whsec_... python receiver.py serve --port 8010
    python receiver.py catch-up --gateway http://127.0.0.1:8000 --api-key sk_...
    python receiver.py orders                             # what the shop knows

State lives in SQLite (`--db`, default receiver.sqlite3). In production, serve `receiver:application` with
gunicorn, keep the inbox in your own database, and run the worker as its own process.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.request

import django
from django.conf import settings

DB_PATH = os.environ.get("RECEIVER_DB", "receiver.sqlite3")
TOLERANCE_S = 5 * 60  # refuse messages signed longer ago (or further ahead) than this: replays

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-receiver-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()

from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

# --- 1. verify -------------------------------------------------------------------------------------------


class InvalidSignature(Exception):
    pass


def verify(secret: str, headers, body: bytes, now: float | None = None) -> dict:
    """Check the `webhook-signature` over `id.timestamp.body` with the secret; returns the event."""
    try:
        msg_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        raise InvalidSignature("missing or malformed webhook headers") from None
    if abs((now or time.time()) - timestamp) > TOLERANCE_S:
        raise InvalidSignature("timestamp outside the tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # during a secret rotation there are several signatures: any valid one will do
    if not any(
        version == "v1" and hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace"))
        for version, _, value in (s.partition(",") for s in signatures)
    ):
        raise InvalidSignature("no valid signature")
    event = json.loads(body)
    if event.get("id") != msg_id:
        raise InvalidSignature("the body's id is not the signed webhook-id")
    return event


# --- 2. store, acknowledge -------------------------------------------------------------------------------


def db() -> sqlite3.Connection:
    conn = sqlite3.connect(DB_PATH, timeout=30, isolation_level=None)
    conn.executescript(
        """
        PRAGMA journal_mode=WAL;
        CREATE TABLE IF NOT EXISTS inbox (
            event_id TEXT PRIMARY KEY, body TEXT NOT NULL, received_at REAL NOT NULL,
            processed_at REAL, outcome TEXT);
        CREATE TABLE IF NOT EXISTS orders (
            payment_id TEXT PRIMARY KEY, merchant_order_id TEXT, state TEXT NOT NULL,
            sequence INTEGER NOT NULL, fulfilled INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, last_event_id TEXT);
        """
    )
    return conn


def store(conn: sqlite3.Connection, event_id: str, body: str) -> bool:
    """Keep the raw event once; False if it was already there (a retry or a replay)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO inbox (event_id, body, received_at) VALUES (?, ?, ?)",
        (event_id, body, time.time()),
    )
    return cur.rowcount == 1


@csrf_exempt
@require_POST
def webhook(request):
    secret = os.environ["WEBHOOK_SECRET"]
    try:
        event = verify(secret, request.headers, request.body)  # the raw bytes, before any parsing
    except InvalidSignature as exc:
        return HttpResponse(str(exc), status=400)
    conn = db()
    try:
        store(conn, event["id"], request.body.decode())
    finally:
        conn.close()
    return JsonResponse({"received": True})  # fast: the work happens in the worker


urlpatterns = [path("webhooks", webhook)]


# --- 3. process, idempotently ----------------------------------------------------------------------------


def process(conn: sqlite3.Connection) -> int:
    """Apply every stored, unprocessed event. The payment's `sequence` orders its events: one older than
    what the shop already applied is stale and changes nothing. Fulfilment happens once."""
    done = 0
    rows = conn.execute("SELECT event_id, body FROM inbox WHERE processed_at IS NULL ORDER BY received_at")
    for event_id, body in rows.fetchall():
        payment = json.loads(body)["data"]
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcome = _apply(conn, payment)
            conn.execute(
                "UPDATE inbox SET processed_at = ?, outcome = ? WHERE event_id = ?",
                (time.time(), outcome, event_id),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        done += 1
    return done


def _apply(conn: sqlite3.Connection, payment: dict) -> str:
    known = conn.execute("SELECT sequence FROM orders WHERE payment_id = ?", (payment["id"],)).fetchone()
    if known and known[0] >= payment["sequence"]:
        return f"stale (sequence {payment['sequence']} <= {known[0]})"
    conn.execute(
        "INSERT INTO orders (payment_id, merchant_order_id, state, sequence) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (payment_id) DO UPDATE SET state = excluded.state, sequence = excluded.sequence",
        (payment["id"], payment["merchant_order_id"], payment["state"], payment["sequence"]),
    )
    outcome = f"applied {payment['state']}"
    if payment["state"] == "paid":
        fulfilled = conn.execute(
            "UPDATE orders SET fulfilled = 1 WHERE payment_id = ? AND fulfilled = 0", (payment["id"],)
        ).rowcount
        if fulfilled:  # here the shop ships the order: once, however often `paid` arrives
            outcome += ", order fulfilled"
    return outcome


def worker_loop(stop: threading.Event) -> None:
    conn = db()
    while not stop.is_set():
        if not process(conn):
            stop.wait(0.3)


# --- 4. catch up -----------------------------------------------------------------------------------------


def catch_up(conn: sqlite3.Connection, gateway: str, api_key: str) -> int:
    """Page through every event after the last one fetched; store what the webhooks missed."""
    row = conn.execute("SELECT last_event_id FROM cursor WHERE name = 'events'").fetchone()
    after = row[0] if row else None
    stored = 0
    while True:
        url = f"{gateway}/api/v1/events?limit=100" + (f"&after={after}" if after else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.load(response)
        for event in page["data"]:
            stored += store(conn, event["id"], json.dumps(event))
            after = event["id"]
        if after:
            conn.execute(
                "INSERT INTO cursor (name, last_event_id) VALUES ('events', ?) "
                "ON CONFLICT (name) DO UPDATE SET last_event_id = excluded.last_event_id",
                (after,),
            )
        if not page["has_more"]:
            return stored


def register(gateway: str, api_key: str, url: str) -> dict:
    request = urllib.request.Request(
        f"{gateway}/api/v1/webhook-endpoints",
        data=json.dumps({"url": url, "description": "example receiver"}).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main(argv: list[str]) -> int:
    global DB_PATH
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", default=DB_PATH)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="receive webhooks (WEBHOOK_SECRET in the environment)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8010)
    for name in ("catch-up", "register"):
        p = sub.add_parser(name)
        p.add_argument("--gateway", required=True)
        p.add_argument("--api-key", required=True)
        if name == "register":
            p.add_argument("--url", required=True)
    sub.add_parser("process", help="apply stored events once")
    sub.add_parser("orders", help="print what the shop knows")
    args = parser.parse_args(argv)
    DB_PATH = args.db
    if args.command == "serve":
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIServer, make_server

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        stop = threading.Event()
        threading.Thread(target=worker_loop, args=(stop,), daemon=True).start()
        with make_server(args.host, args.port, application, server_class=Server) as server:
            print(f"receiving on http://{args.host}:{args.port}/webhooks", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                stop.set()
        return 0
    if args.command == "register":
        endpoint = register(args.gateway, args.api_key, args.url)
        print(f"endpoint {endpoint['id']}\nWEBHOOK_SECRET={endpoint['secret']}")
        return 0
    conn = db()
    if args.command == "catch-up":
        print(f"stored {catch_up(conn, args.gateway, args.api_key)} missed events")
        print(f"processed {process(conn)}")
    elif args.command == "process":
        print(f"processed {process(conn)}")
    elif args.command == "orders":
        for row in conn.execute(
            "SELECT payment_id, merchant_order_id, state, sequence, fulfilled FROM orders"
        ):
            print(*row)
    return 0


from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

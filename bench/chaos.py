#!/usr/bin/env python
"""Chaos run: payments of every kind on a real chain while the gateway's processes are killed at random.

    .venv/bin/python bench/chaos.py [--payments 200] [--seed 1] [--kill-every 4] [--json PATH]

What it does (docs/RELIABILITY.md has a written-up run):

1. The production stack of docs/OPERATIONS.md (tests/stack.py): a PostgreSQL and a Redis broker of its own,
   `manage.py migrate`, a merchant, an EVM wallet and an API key made with the README's commands; gunicorn,
   one Celery worker per queue and beat with DJANGO_DEBUG off. A local chain: anvil, a block a second, a
   6-decimal test USDC. A webhook receiver that answers 500 to one request in ten and hangs past the
   gateway's timeout on one in twenty, recording every request.
2. Payments over the API (an idempotency key each, retried as a merchant's client would while the web
   processes are down): ETH or USDC, paid exactly, under (some topped up), over, twice, in the other asset,
   after their expiry (late), or reorged out of the chain (anvil_reorg drops the transaction) and paid again.
3. Meanwhile, every `--kill-every` seconds on average, one of the web, scan, webhooks, default workers or beat
   is SIGKILLed with its children and restarted a moment later; PostgreSQL is stopped and started once
   half-way. A probe asks the API and the checkout every half second.
4. Then the faults stop, the receiver heals, blocks are mined until every payment is settled and every
   webhook delivered, and the run checks:
   - `manage.py verify_payments`: no payment, refund or settlement differs from its evidence;
   - every transfer the chain holds to a payment address (ETH transactions and USDC Transfer logs, read
     from anvil block by block) is recorded exactly once as a canonical observation, and no canonical
     observation is missing from the chain;
   - every state transition has its event, and every event (`position` given) reached the receiver with a
     valid Standard Webhooks signature; duplicates (the same webhook-id more than once) are counted;
   - `manage.py verify_audit` passes;
   - the probe's failures fall inside the windows when no web process ran.
5. Prints the figures (and writes them as JSON with --json); exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from devchain.anvil import (  # noqa: E402
    AnvilNode,
    deploy_token,
    free_port,
    mint,
    send_eth,
    token_transfer,
    token_units,
)
from tests.stack import (  # noqa: E402
    REPO,
    Database,
    Processes,
    RedisServer,
    get,
    post,
    production_env,
    until,
)

ETH_XPUB = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
KINDS = {  # share of the payments
    "exact": 30,
    "under": 8,
    "under_topped_up": 8,
    "over": 8,
    "twice": 8,
    "wrong_asset": 8,
    "late": 6,
    "reorged_then_paid": 8,
    "reorged": 6,
    "unpaid": 10,
}
HUNG = -1  # a request answered after the gateway's timeout
EVM_NATIVE_OUTPUT_INDEX = -1  # payments.models.evidence: how an ETH transfer is keyed
KILLABLE = ("web", "worker-scan", "worker-webhooks", "worker-default", "beat")


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the receiver -------------------------------------------------------------------------------------------


@dataclass
class FlakyReceiver:
    """Answers 500 to `fail` of the requests and hangs `hang_s` on `hang` of them (past the gateway's
    attempt timeout), 200 otherwise; records every request (headers, body, status)."""

    fail: float = 0.10
    hang: float = 0.05
    hang_s: float = 4.0
    received: list[tuple[dict, bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    server: ThreadingHTTPServer | None = None

    def start(self) -> FlakyReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    roll = receiver.rng.random()
                status = 500 if roll < receiver.fail else 200
                hung = receiver.fail <= roll < receiver.fail + receiver.hang
                if hung:
                    time.sleep(receiver.hang_s)  # the gateway gives up first: a failed attempt for it
                with receiver.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append((headers, body, HUNG if hung else status))
                try:
                    self.send_response(status)
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def heal(self) -> None:
        self.fail = self.hang = 0.0

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --- the faults ---------------------------------------------------------------------------------------------


class Chaos(threading.Thread):
    """Kills one process (with its children) every `every` seconds on average and restarts it after 0.5-3 s;
    stops and starts PostgreSQL once, at `database_at` seconds. Keeps the windows when no web process ran."""

    def __init__(self, processes: Processes, database: Database, every: float, database_at: float, seed: int):
        super().__init__(daemon=True, name="chaos")
        self.processes, self.database = processes, database
        self.every, self.database_at = every, database_at
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.kills: Counter[str] = Counter()
        self.web_down: list[tuple[float, float]] = []
        self.database_down: tuple[float, float] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            while not self.stopping.wait(self.rng.expovariate(1 / self.every)):
                if self.database_down is None and time.monotonic() - started >= self.database_at:
                    down = time.monotonic()
                    self.database.stop()
                    time.sleep(self.rng.uniform(2, 5))
                    self.database.start()
                    self.database_down = (down, time.monotonic())
                    log(f"PostgreSQL stopped and started ({self.database_down[1] - down:.1f} s)")
                    continue
                name = self.rng.choice(KILLABLE)
                down = time.monotonic()
                self.processes.kill(name)
                self.kills[name] += 1
                time.sleep(self.rng.uniform(0.5, 3.0))
                self.processes.start(name)
                if name == "web":
                    self.web_down.append((down, time.monotonic() + 3.0))  # + its start-up
        except BaseException as exc:  # reported by the run, not lost in a thread
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


class Probe(threading.Thread):
    """Asks the API (the intent list) and a checkout page every half second; keeps each failure's time."""

    def __init__(self, base: str, key: str):
        super().__init__(daemon=True, name="probe")
        self.base, self.key = base, key
        self.checkout_url: str | None = None
        self.asked = 0
        self.failures: list[tuple[float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            for what, url, headers in (
                (
                    "api",
                    f"{self.base}/api/v1/payment-intents?limit=1",
                    {"Authorization": f"Bearer {self.key}"},
                ),
                ("checkout", self.checkout_url, {}),
            ):
                if url is None:
                    continue
                self.asked += 1
                status, _ = get(url, headers)
                if status != 200:
                    self.failures.append((time.monotonic(), f"{what} {status}"))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


# --- payments -----------------------------------------------------------------------------------------------


def create(base: str, key: str, body: dict, idempotency_key: str, timeout: float = 120) -> dict:
    """POST as a merchant's client does while the gateway restarts: the same idempotency key until 201."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return post(f"{base}/api/v1/payment-intents", key, body, idempotency_key=idempotency_key)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (409, 429):  # refused: retrying would not help
                raise RuntimeError(f"create {idempotency_key}: {exc.code} {exc.read().decode()}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"create {idempotency_key} failed for {timeout} s: {exc}") from exc
            time.sleep(0.5)
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"create {idempotency_key} failed for {timeout} s: {exc}") from exc
            time.sleep(0.5)


@dataclass
class Payment:
    kind: str
    intent: dict
    sent: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)


class Payer:
    def __init__(self, node: AnvilNode, token, rng: random.Random):
        self.node, self.token, self.rng = node, token, rng
        self.w3 = node.w3

    def pay(self, intent: dict, fraction: Decimal, *, asset: str | None = None) -> str:
        units = int(Decimal(intent["amount_due"]["base_units"]) * fraction)
        asset = asset or intent["asset"]
        sender = self.node.accounts[1 + self.rng.randrange(5)]
        if asset == "ETH":
            wei = units if intent["asset"] == "ETH" else units * 10**12  # another asset: an amount of ETH
            return send_eth(self.w3, sender, intent["address"], wei)
        amount = units if intent["asset"] == "USDC" else max(1, units // 10**12)
        return token_transfer(self.w3, self.token, sender, intent["address"], amount)


def run_payment(kind: str, n: int, base: str, key: str, payer: Payer, node: AnvilNode, late: list) -> Payment:
    asset = "USDC" if n % 3 == 0 else "ETH"
    body = {
        "amount": "0.01" if asset == "ETH" else "12.5",
        "currency": asset,
        "asset": asset,
        "network": "evm-local",
    }
    body["merchant_order_id"] = f"chaos-{n}"
    if kind == "late":
        body["expires_in_minutes"] = 1
    intent = create(base, key, body, f"chaos-{n}")
    payment = Payment(kind, intent)
    other = "USDC" if asset == "ETH" else "ETH"
    if kind == "exact":
        payment.sent.append(payer.pay(intent, Decimal(1)))
    elif kind == "under":
        payment.sent.append(payer.pay(intent, Decimal("0.5")))
    elif kind == "under_topped_up":
        payment.sent.append(payer.pay(intent, Decimal("0.6")))
        payment.sent.append(payer.pay(intent, Decimal("0.4")))
    elif kind == "over":
        payment.sent.append(payer.pay(intent, Decimal("1.5")))
    elif kind == "twice":
        payment.sent.append(payer.pay(intent, Decimal(1)))
        payment.sent.append(payer.pay(intent, Decimal(1)))
    elif kind == "wrong_asset":
        payment.sent.append(payer.pay(intent, Decimal(1), asset=other))
    elif kind == "late":
        late.append(payment)  # paid after its expiry, at the end of the run
    elif kind in ("reorged", "reorged_then_paid"):
        payment.sent.append(payer.pay(intent, Decimal(1)))
        time.sleep(1.5)  # a scan may see it
        node.reorg(2)  # the last two blocks replaced: the payment's transaction is gone
        # anvil_reorg sets the chain's clock back about two seconds each time; a chain whose block times
        # lag the wall clock would make late payments look on time (first seen is the block's time)
        node.rpc("evm_setNextBlockTimestamp", [int(time.time()) + 1])
        if kind == "reorged_then_paid":
            payment.sent.append(payer.pay(intent, Decimal(1)))
    return payment


# --- the checks ---------------------------------------------------------------------------------------------


def chain_transfers(
    node: AnvilNode, token_address: str, addresses: set[str], first: int
) -> set[tuple[str, int]]:
    """(tx hash, index) of every ETH transaction and USDC Transfer log to one of `addresses`, as the
    gateway keys observations (an ETH transfer's index -1, a log's its log index in the block)."""
    found: set[tuple[str, int]] = set()
    w3 = node.w3
    transfer_topic = w3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()
    for height in range(first, node.block_number() + 1):
        block = w3.eth.get_block(height, full_transactions=True)
        for tx in block.transactions:
            if tx["to"] and tx["to"].lower() in addresses and tx["value"] > 0:
                found.add((tx["hash"].to_0x_hex(), EVM_NATIVE_OUTPUT_INDEX))
    logs = w3.eth.get_logs(
        {
            "fromBlock": first,
            "toBlock": "latest",
            "address": w3.to_checksum_address(token_address),
            "topics": [transfer_topic],
        }
    )
    for entry in logs:
        to = "0x" + entry["topics"][2].hex()[-40:]
        if to.lower() in addresses:
            found.add((entry["transactionHash"].to_0x_hex(), entry["logIndex"]))
    return found


def _interrupted(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the run through its `finally`: nothing is left running


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between kills")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=sorted(KINDS), help="every payment of this kind (to look at one)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    report: dict = {"payments": args.payments, "seed": args.seed, "kill_every_s": args.kill_every}

    state = REPO / ".state" / f"chaos-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    database: Database | None = None
    redis: RedisServer | None = None
    node: AnvilNode | None = None
    receiver: FlakyReceiver | None = None
    processes: Processes | None = None
    chaos: Chaos | None = None
    probe: Probe | None = None
    try:
        database = Database(REPO / ".state" / f"chaos-pg-{os.getpid()}")
        redis = RedisServer()
        redis.start()
        node = AnvilNode(chain_id=31337, block_time=1).start()
        receiver = FlakyReceiver().start()
        token = deploy_token(node.w3, node.accounts[0])
        for account in node.accounts[1:6]:
            mint(node.w3, token, node.accounts[0], account, token_units("1000000"))
        port = free_port()
        env = production_env(database=database, broker_url=redis.url, state=state, port=port)
        env |= {
            "GATEWAY_SCAN_INTERVAL_S": "1",
            "GATEWAY_WEBHOOK_TIMEOUT_S": "2",
            "GATEWAY_WEBHOOK_RETRY_SCHEDULE_S": "0,1,2,3,5,8,10,15,20,30",
            "GATEWAY_READY_SCAN_MAX_AGE_S": "0",
        }
        processes = Processes(env, state)
        processes.manage("migrate", "--noinput")
        merchant = processes.manage("create_merchant", "Chaos shop", "--late-payment-window-minutes", "60")
        processes.manage("add_wallet", merchant, "--chain", "evm", "--xpub", ETH_XPUB)
        key = processes.manage(
            "create_api_key",
            merchant,
            "--scopes",
            "payments:read,payments:write,webhooks:read,webhooks:write",
        ).split()[-1]
        first = node.block_number()
        database.execute(
            "UPDATE payments_network SET enabled = TRUE, rpc_url = %s, scan_start_height = %s WHERE code = 'evm-local'",
            (node.url, first),
        )
        database.execute(  # the test USDC on the local chain (the admin's Network asset form in production)
            "INSERT INTO payments_networkasset (network_id, asset_id, contract_address, decimals, "
            "default_confirmations, enabled) SELECT n.id, a.id, %s, 6, 2, TRUE FROM payments_network n, "
            "payments_asset a WHERE n.code = 'evm-local' AND a.code = 'USDC' ON CONFLICT (network_id, asset_id) "
            "DO UPDATE SET contract_address = EXCLUDED.contract_address, decimals = 6, default_confirmations = 2",
            (token.address.lower(),),
        )
        processes.start()
        base = f"http://127.0.0.1:{port}"
        until(lambda: get(f"{base}/readyz")[0] == 200, "/readyz 200", 120, processes)
        secret = post(f"{base}/api/v1/webhook-endpoints", key, {"url": receiver.url})["secret"]

        probe = Probe(base, key)
        probe.start()
        chaos = Chaos(processes, database, args.kill_every, database_at=30.0, seed=args.seed)
        chaos.start()
        kinds = (
            [args.only] * args.payments
            if args.only
            else rng.choices(list(KINDS), weights=list(KINDS.values()), k=args.payments)
        )
        payer = Payer(node, token, rng)
        late: list[Payment] = []
        payments: list[Payment] = []
        log(f"{args.payments} payments: {dict(Counter(kinds))}")
        for n, kind in enumerate(kinds):
            payments.append(run_payment(kind, n, base, key, payer, node, late))
            if probe.checkout_url is None:
                probe.checkout_url = payments[-1].intent["checkout_url"]
        for payment in late:  # paid after their expiry (one minute), within the late window
            wait = 65 - (time.monotonic() - payment.created)
            if wait > 0:
                time.sleep(wait)
            payment.sent.append(payer.pay(payment.intent, Decimal(1)))
        chaos.stop()
        if chaos.error:
            raise chaos.error
        log(f"faults over: kills {dict(chaos.kills)}; settling")
        for name in KILLABLE:  # every process running again
            if name not in processes.running:
                processes.start(name)
        receiver.heal()
        report["kills"] = dict(chaos.kills)
        report["database_restart_s"] = (
            round(chaos.database_down[1] - chaos.database_down[0], 1) if chaos.database_down else None
        )
        report["faults_s"] = round(time.monotonic() - started, 1)
        settle(base, key, processes, database, node)
        probe.stop()
        report |= check(processes, database, node, token, receiver, secret, probe, chaos, first, payments)
    finally:
        for thread in (chaos, probe):
            if thread is not None:
                thread.stop()
        if processes is not None:
            processes.stop()
        for resource in (receiver, node, redis):
            if resource is not None:
                resource.stop()
        if database is not None:
            database.server.cleanup()
        log(f"logs of the processes: {state}")
    report["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report.get("ok") else 1


def settle(base: str, key: str, processes: Processes, database: Database, node: AnvilNode) -> None:
    """Mine until nothing is left to do: no payment waiting on confirmations, no webhook work pending."""
    import psycopg

    def quiet() -> bool:
        node.mine(1)
        with psycopg.connect(database.url) as conn:
            confirming = conn.execute(
                "SELECT count(*) FROM payments_paymentintent WHERE state IN ('detected', 'confirming')"
            ).fetchone()[0]
            undispatched = conn.execute(
                "SELECT count(*) FROM payments_event WHERE position IS NULL"
            ).fetchone()[0]
            pending = conn.execute(
                "SELECT count(*) FROM payments_webhookdelivery WHERE state = 'pending'"
            ).fetchone()[0]
        return confirming == 0 and undispatched == 0 and pending == 0

    until(quiet, "payments settled and webhooks delivered", 600, processes)


def check(processes, database, node, token, receiver, secret, probe, chaos, first, payments) -> dict:
    import psycopg
    from standardwebhooks import Webhook

    result: dict = {}
    verify = subprocess.run(
        [sys.executable, "manage.py", "verify_payments"],
        cwd=REPO,
        env=processes.env,
        capture_output=True,
        text=True,
    )
    result["verify_payments"] = (
        verify.stdout.strip().splitlines()[-1] if verify.stdout.strip() else verify.stderr[-500:]
    )
    result["verify_payments_ok"] = verify.returncode == 0
    audit = subprocess.run(
        [sys.executable, "manage.py", "verify_audit"],
        cwd=REPO,
        env=processes.env,
        capture_output=True,
        text=True,
    )
    result["verify_audit_ok"] = audit.returncode == 0
    with psycopg.connect(database.url) as conn:
        addresses = {
            a.lower()
            for (a,) in conn.execute(
                "SELECT a.address FROM payments_paymentaddress a JOIN payments_paymentintent i ON i.address_id = a.id"
            )
        }
        observed_rows = conn.execute(
            "SELECT o.tx_hash, o.output_index FROM payments_chainobservation o "
            "JOIN payments_network n ON n.id = o.network_id WHERE n.code = 'evm-local' AND o.canonical"
        ).fetchall()
        transitions_without_event = conn.execute(
            "SELECT count(*) FROM payments_statetransition t "
            "WHERE NOT EXISTS (SELECT 1 FROM payments_event e WHERE e.transition_id = t.id)"
        ).fetchone()[0]
        events = {e for (e,) in conn.execute("SELECT id FROM payments_event WHERE position IS NOT NULL")}
        states = dict(
            conn.execute("SELECT state, count(*) FROM payments_paymentintent GROUP BY state").fetchall()
        )
        late_ids = [p.intent["id"] for p in payments if p.kind == "late"]
        late_rows = conn.execute(
            "SELECT i.id, i.created_at, i.expires_at, min(least(o.block_time, o.seen_unconfirmed_at)) "
            "FROM payments_paymentintent i LEFT JOIN payments_chainobservation o ON o.intent_id = i.id "
            "WHERE i.id = ANY(%s) GROUP BY i.id, i.created_at, i.expires_at",
            (late_ids,),
        ).fetchall()
        final = {
            i: (state, flags)
            for i, state, flags in conn.execute("SELECT id, state, flags FROM payments_paymentintent")
        }
    observed = {(h.lower(), i) for h, i in observed_rows}
    on_chain = {(h.lower(), i) for h, i in chain_transfers(node, token.address, addresses, first)}
    result["states"] = states
    by_kind: dict[str, Counter] = {}
    for payment in payments:
        state, flags = final.get(payment.intent["id"], ("?", []))
        label = state + ("+" + ",".join(sorted(flags)) if flags else "")
        by_kind.setdefault(payment.kind, Counter())[label] += 1
    result["states_by_kind"] = {kind: dict(counts) for kind, counts in sorted(by_kind.items())}
    result["late_payments"] = [
        {"created": str(c), "expires": str(e), "first_seen": str(f)} for _, c, e, f in late_rows
    ]
    result["chain_transfers"] = len(on_chain)
    result["observations_missing"] = sorted(map(list, on_chain - observed))[:10]
    result["observations_not_on_chain"] = sorted(map(list, observed - on_chain))[:10]
    result["observations_recorded_twice"] = len(observed_rows) - len(observed)
    result["transitions_without_event"] = transitions_without_event
    hook = Webhook(secret)
    received: Counter[str] = Counter()
    bad_signatures = 0
    for headers, body, status in receiver.received:
        try:
            hook.verify(body, headers)
        except Exception:
            bad_signatures += 1
            continue
        if status == 200:
            received[headers["webhook-id"]] += 1
    result["events"] = len(events)
    result["events_not_delivered"] = len(events - set(received))
    result["webhook_requests"] = len(receiver.received)
    result["duplicate_deliveries"] = sum(n - 1 for n in received.values() if n > 1)
    result["bad_signatures"] = bad_signatures
    windows = chaos.web_down + ([chaos.database_down] if chaos.database_down else [])
    outside = [f for t, f in probe.failures if not any(a <= t <= b for a, b in windows)]
    result["probe_requests"] = probe.asked
    result["probe_failures"] = len(probe.failures)
    result["probe_failures_outside_downtime"] = len(outside)
    result["ok"] = bool(
        result["verify_payments_ok"]
        and result["verify_audit_ok"]
        and not result["observations_missing"]
        and not result["observations_not_on_chain"]
        and result["observations_recorded_twice"] == 0
        and transitions_without_event == 0
        and result["events_not_delivered"] == 0
        and bad_signatures == 0
    )
    return result


if __name__ == "__main__":
    sys.exit(main())

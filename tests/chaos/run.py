"""The chaos run (docs/RELIABILITY.md): payments of every kind on anvil and litecoind while the gateway's
processes are killed at random, then the checks. `chaos_run` returns the report; `report["ok"]` says
whether every check passed."""

from __future__ import annotations

import os
import random
import time
import urllib.error
from collections import Counter
from dataclasses import dataclass

import psycopg

from devchain.anvil import free_port
from tests.stack import REPO, Database, Processes, RedisServer, get, post, production_env, until

from . import evm, litecoin
from .checks import check
from .evm import EvmChains, Payment
from .faults import KILLABLE, Chaos, Probe, log
from .litecoin import LitecoinChain
from .receiver import FlakyReceiver

ETH_XPUB = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
LATE_AFTER_S = 65  # late payments: created to expire in one minute, paid after this
CHAINS = {"evm": 60, "ltc": 40}  # share of the payments


@dataclass
class Config:
    payments: int = 200
    seed: int = 1
    kill_every: float = 4.0  # mean seconds between kills
    database_at: float = 30.0  # seconds into the faults when PostgreSQL restarts
    only: str | None = None  # "evm:late", "ltc:rbf_away", ...: every payment of this kind


def kinds_drawn(config: Config, rng: random.Random) -> list[tuple[str, str]]:
    if config.only:
        chain, _, kind = config.only.partition(":")
        return [(chain, kind)] * config.payments
    chains = rng.choices(list(CHAINS), weights=list(CHAINS.values()), k=config.payments)
    tables = {"evm": evm.KINDS, "ltc": litecoin.KINDS}
    return [(c, rng.choices(list(tables[c]), weights=list(tables[c].values()))[0]) for c in chains]


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
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"create {idempotency_key} failed for {timeout} s: {exc}") from exc
        time.sleep(0.5)


def chaos_run(config: Config) -> dict:
    rng = random.Random(config.seed)
    started = time.monotonic()
    report: dict = {"payments": config.payments, "seed": config.seed, "kill_every_s": config.kill_every}
    state = REPO / ".state" / f"chaos-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    stops: list = []  # called in reverse order, whatever happens
    try:
        database = Database(REPO / ".state" / f"chaos-pg-{os.getpid()}")
        stops.append(database.server.cleanup)
        redis = RedisServer()
        redis.start()
        stops.append(redis.stop)
        chains = {"evm": EvmChains(rng)}
        stops.append(chains["evm"].stop)
        chains["ltc"] = LitecoinChain(rng)
        stops.append(chains["ltc"].stop)
        receiver = FlakyReceiver().start()
        stops.append(receiver.stop)
        port = free_port()
        env = production_env(database=database, broker_url=redis.url, state=state, port=port)
        env |= {
            "GATEWAY_SCAN_INTERVAL_S": "1",
            "GATEWAY_WEBHOOK_TIMEOUT_S": "2",
            "GATEWAY_WEBHOOK_RETRY_SCHEDULE_S": "0,1,2,3,5,8,10,15,20,30",
            "GATEWAY_READY_SCAN_MAX_AGE_S": "0",
            "GATEWAY_RATE_SOURCE": "fixed",
            "GATEWAY_FIXED_RATES": "ETH-USD=3000,USDC-USD=1,LTC-USD=80",
        }
        processes = Processes(env, state)
        stops.append(processes.stop)
        key = set_up(processes, database, chains)
        processes.start()
        base = f"http://127.0.0.1:{port}"
        until(lambda: get(f"{base}/readyz")[0] == 200, "/readyz 200", 120, processes)
        receiver.secret = post(f"{base}/api/v1/webhook-endpoints", key, {"url": receiver.url})["secret"]

        probe = Probe(base, key)
        probe.start()
        stops.append(probe.stop)
        chaos = Chaos(
            processes,
            database,
            config.kill_every,
            database_at=config.database_at,
            seed=config.seed,
            web_up=lambda: get(f"{base}/healthz")[0] == 200,
        )
        chaos.start()
        stops.append(chaos.stop)
        drawn = kinds_drawn(config, rng)
        log(f"{config.payments} payments: {dict(Counter(f'{c}:{k}' for c, k in drawn))}")
        payments: list[Payment] = []
        for n, (chain, kind) in enumerate(drawn):
            body = chains[chain].body(n) | {"merchant_order_id": f"chaos-{n}"}
            if kind == "late":
                body["expires_in_minutes"] = 1
            payment = Payment(chain, kind, create(base, key, body, f"chaos-{n}"))
            chains[chain].act(payment)
            payments.append(payment)
            probe.checkout_url = probe.checkout_url or payment.intent["checkout_url"]
            if len(payments) % 100 == 0:
                log(f"{len(payments)} payments made; kills so far {sum(chaos.kills.values())}")
        for payment in (p for p in payments if p.kind == "late"):  # paid after expiry, in the late window
            time.sleep(max(0.0, LATE_AFTER_S - (time.monotonic() - payment.created)))
            chains[payment.chain].pay_late(payment)
        until(lambda: chaos.database_down or chaos.error, "PostgreSQL's restart", config.database_at + 60)
        chaos.stop()
        if chaos.error:
            raise chaos.error
        log(f"faults over: kills {dict(chaos.kills)}; settling")
        for name in KILLABLE:  # every process running again
            if name not in processes.running:
                processes.start(name)
        receiver.heal()
        report |= {
            "kills": dict(chaos.kills),
            "database_restart_s": (
                round(chaos.database_down[1] - chaos.database_down[0], 1) if chaos.database_down else None
            ),
            "faults_s": round(time.monotonic() - started, 1),
        }
        settle(database, chains, processes)
        probe.stop()
        report |= check(processes, database, chains, receiver, probe, chaos, payments)
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as exc:  # the others are still stopped
                log(f"{stop!r}: {exc}")
        log(f"logs of the processes: {state}")
    report["total_s"] = round(time.monotonic() - started, 1)
    return report


def set_up(processes: Processes, database: Database, chains: dict) -> str:
    """Migrate; a merchant with an EVM and a litecoin-regtest wallet and an API key, made with the README's
    commands; the networks pointed at the local nodes. Returns the API key."""
    processes.manage("migrate", "--noinput")
    merchant = processes.manage("create_merchant", "Chaos shop", "--late-payment-window-minutes", "60")
    processes.manage("add_wallet", merchant, "--chain", "evm", "--xpub", ETH_XPUB)
    processes.manage(
        "add_wallet",
        merchant,
        "--chain",
        "litecoin",
        "--network",
        litecoin.NETWORK,
        "--xpub",
        litecoin.account_public_key(),
    )
    scopes = "payments:read,payments:write,webhooks:read,webhooks:write"
    key = processes.manage("create_api_key", merchant, "--scopes", scopes).split()[-1]
    for chain in chains.values():
        for sql, params in chain.networks_sql():
            database.execute(sql, params)
    return key


def settle(database: Database, chains: dict, processes: Processes) -> None:
    """Mine until nothing is left to do: no payment waiting on confirmations, no webhook work pending."""

    def quiet() -> bool:
        for chain in chains.values():
            chain.mine()
        with psycopg.connect(database.url) as conn:
            busy = conn.execute(
                "SELECT (SELECT count(*) FROM payments_paymentintent WHERE state IN ('detected', 'confirming'))"
                " + (SELECT count(*) FROM payments_event WHERE position IS NULL)"
                " + (SELECT count(*) FROM payments_webhookdelivery WHERE state = 'pending')"
            ).fetchone()[0]
        return busy == 0

    until(quiet, "payments settled and webhooks delivered", 600, processes)

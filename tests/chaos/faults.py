"""The faults of the chaos run (kills of the production processes, a PostgreSQL restart) and the probe
that sees what the API and the checkout answered meanwhile."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import psycopg

from tests.stack import Database, Processes, get

KILLABLE = ("web", "worker-scan", "worker-webhooks", "worker-default", "beat")
WEB_START_MAX_S = 60.0  # a restarted gunicorn that does not answer by then fails the run's probe check


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def deliveries_in_flight(database: Database) -> int | None:
    """Webhook attempts claimed under a live lease and not recorded yet: each may reach the receiver and
    still be sent again if the worker holding it dies now. None when the database does not answer."""
    try:
        with psycopg.connect(database.url, connect_timeout=2) as conn:
            return conn.execute(
                "SELECT count(*) FROM payments_webhookdelivery WHERE state = 'pending' "
                "AND claimed_at IS NOT NULL AND next_attempt_at > now()"
            ).fetchone()[0]
    except psycopg.Error:
        return None


class Chaos(threading.Thread):
    """Kills one process (with its children) every `every` seconds on average and restarts it after 0.5-3 s;
    stops and starts PostgreSQL once, at `database_at` seconds. Keeps the windows when no web process ran,
    and the webhook attempts in flight at each fault that could lose a result (a kill of the webhook worker,
    the database going away under it): the bound on duplicate deliveries."""

    def __init__(
        self,
        processes: Processes,
        database: Database,
        every: float,
        database_at: float,
        seed: int,
        web_up: Callable[[], bool],
    ):
        super().__init__(daemon=True, name="chaos")
        self.web_up = web_up  # True once a restarted web process answers
        self.processes, self.database = processes, database
        self.every, self.database_at = every, database_at
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.kills: Counter[str] = Counter()
        self.web_down: list[tuple[float, float]] = []
        self.database_down: tuple[float, float] | None = None
        self.in_flight_at_faults = 0
        self.in_flight_unknown = 0  # faults when the count could not be read
        self.error: BaseException | None = None

    def _count_in_flight(self) -> None:
        count = deliveries_in_flight(self.database)
        if count is None:
            self.in_flight_unknown += 1
        else:
            self.in_flight_at_faults += count

    def run(self) -> None:
        started = time.monotonic()
        try:
            while True:
                wait = self.rng.expovariate(1 / self.every)
                if self.database_down is None:  # the restart comes on time, however rare the kills
                    wait = min(wait, max(0.0, self.database_at - (time.monotonic() - started)))
                if self.stopping.wait(wait):
                    break
                if self.database_down is None and time.monotonic() - started >= self.database_at:
                    self._count_in_flight()
                    down = time.monotonic()
                    self.database.stop()
                    time.sleep(self.rng.uniform(2, 5))
                    self.database.start()
                    self.database_down = (down, time.monotonic())
                    log(f"PostgreSQL stopped and started ({self.database_down[1] - down:.1f} s)")
                    continue
                name = self.rng.choice(KILLABLE)
                if name == "worker-webhooks":
                    self._count_in_flight()
                down = time.monotonic()
                self.processes.kill(name)
                self.kills[name] += 1
                time.sleep(self.rng.uniform(0.5, 3.0))
                self.processes.start(name)
                if name == "web":  # down until it answers again (start-up included)
                    deadline = time.monotonic() + WEB_START_MAX_S
                    while not self.web_up() and time.monotonic() < deadline:
                        time.sleep(0.1)
                    self.web_down.append((down, time.monotonic()))
        except BaseException as exc:  # reported by the run, not lost in a thread
            self.error = exc

    def downtime(self) -> list[tuple[float, float]]:
        return self.web_down + ([self.database_down] if self.database_down else [])

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


class Probe(threading.Thread):
    """Asks the API (the intent list) and a checkout page every half second; keeps each failure's time."""

    def __init__(self, base: str, key: str):
        super().__init__(daemon=True, name="probe")
        self.base, self.key = base, key
        self.checkout_url: str | None = None
        self.started = time.monotonic()
        self.asked = 0
        self.failures: list[tuple[float, float, str]] = []  # asked, answered, what
        self.stopping = threading.Event()

    def run(self) -> None:
        api = (f"{self.base}/api/v1/payment-intents?limit=1", {"Authorization": f"Bearer {self.key}"})
        while not self.stopping.wait(0.5):
            for what, (url, headers) in (("api", api), ("checkout", (self.checkout_url, {}))):
                if url is None:
                    continue
                self.asked += 1
                asked_at = time.monotonic()
                try:
                    status, _ = get(url, headers)
                except Exception as exc:  # whatever it was, the request failed; the probe goes on
                    status = repr(exc)
                if status != 200:
                    self.failures.append((asked_at, time.monotonic(), f"{what} {status}"))

    def failures_outside(self, windows: list[tuple[float, float]]) -> list[str]:
        """Failures of requests that overlapped no window of downtime."""
        return [
            f"{what}: asked at {asked - self.started:.1f} s, failed at {ended - self.started:.1f} s"
            for asked, ended, what in self.failures
            if not any(a <= ended and asked <= b for a, b in windows)
        ]

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

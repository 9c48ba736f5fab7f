"""A worker process's queue of claimed attempts, between the drain's database thread and its senders.

The drain claims ahead: each endpoint gets a local queue of claimed deliveries, about a second of
its recent sending rate (at least twice the per-endpoint cap), so the sending threads never wait for a
database round trip. The per-endpoint cap (GATEWAY_WEBHOOK_PER_ENDPOINT) bounds attempts *in flight*:
a sender takes the next claim of the next endpoint, round robin, among endpoints with fewer than `cap`
attempts in flight, so a slow or timing-out endpoint holds at most `cap` threads, whatever its backlog.

Senders hand their results back here; the database thread takes them in batches (`take_done`) and
records them, and gives back (releases) the claims that must not be sent: those whose lease would end
before an attempt could finish, those of an endpoint disabled meanwhile, those whose endpoint the
database thread has not read for ENDPOINTS_FRESH_S (an outage), and every queued claim when the drain
stops.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime, timedelta

from .claims import Claim
from .transport import Result

AHEAD_S = 1.0  # an endpoint's queue holds about this long of its recent sending rate
MAX_AHEAD = 512  # claims queued or in flight per endpoint, at most
RATE_TAU_S = 0.5  # time constant of the sending-rate average
FLUSH_N = 256  # results that wake the database thread at once (otherwise it wakes every FLUSH_S)
LEASE_MARGIN_S = 5.0  # a claim is sent only if its lease outlasts an attempt by this much
ENDPOINTS_FRESH_S = 3.0  # a claim is sent only with its endpoint's URL and secrets read this recently


class Pipeline:
    """Thread-safe. `serve` runs on each sending thread; every other method on the database thread."""

    def __init__(
        self,
        *,
        cap: int,
        send: Callable[[Claim], Result],
        clock: Callable[[], datetime],
        attempt_s: float,
        rates: dict[str, float] | None = None,
    ):
        self.cap = cap
        self.send = send
        self.clock = clock
        self.min_lease_left = timedelta(seconds=attempt_s + LEASE_MARGIN_S)
        self.wake = threading.Event()  # set by senders when the database thread has work
        self._cond = threading.Condition()
        self._queued: dict[str, deque[Claim]] = {}
        self._in_flight: Counter[str] = Counter()
        self._ready: deque[str] = deque()  # endpoints with a queued claim and a free slot, round robin
        self._is_ready: set[str] = set()
        self._results: list[tuple[Claim, Result]] = []
        self._expired: list[Claim] = []
        self._low: dict[str, int] = {}  # a queue this short asks for more
        self._closing = False
        self._completed: Counter[str] = Counter()
        self._rates = {} if rates is None else rates  # endpoint -> attempts/s (the process's, kept)
        self._rates_at = time.monotonic()
        self._endpoints: dict[str, tuple[str, list[str]]] = {}  # endpoint -> URL, active secrets (latest)
        self._fresh_until = math.inf  # monotonic: until then the endpoints' URLs and secrets are recent

    # --- the sending threads ------------------------------------------------------------------------

    def serve(self) -> None:
        """Send queued claims until `close`: the next endpoint with a free slot, its oldest claim."""
        while True:
            with self._cond:
                while not self._ready and not self._closing:
                    self._cond.wait()
                if not self._ready:
                    return
                endpoint_id = self._ready.popleft()
                queue = self._queued[endpoint_id]
                claim = queue.popleft()
                self._in_flight[endpoint_id] += 1
                if queue and self._in_flight[endpoint_id] < self.cap:
                    self._ready.append(endpoint_id)
                else:
                    self._is_ready.discard(endpoint_id)
                if self._ready:
                    self._cond.notify()  # another thread for the next endpoint or the next slot
                if len(queue) <= self._low.get(endpoint_id, 0):
                    self.wake.set()
                # sent to the endpoint's URL with its secrets as last read, not as they were at the claim
                claim.url, claim.secrets = self._endpoints.get(endpoint_id, (claim.url, claim.secrets))
                stale = time.monotonic() > self._fresh_until
            now = self.clock()
            if stale or (claim.lease_end is not None and claim.lease_end - now < self.min_lease_left):
                # given back unsent: its lease would end mid-attempt, or the database thread has not read
                # the endpoint for a while (an outage: it may have moved or rotated its secret meanwhile)
                self._finish(claim, None)
                continue
            claim.started_at = now
            self._finish(claim, self.send(claim))

    def _finish(self, claim: Claim, result: Result | None) -> None:
        endpoint_id = claim.endpoint_id
        with self._cond:
            self._in_flight[endpoint_id] -= 1
            if result is None:
                self._expired.append(claim)
                self.wake.set()
            else:
                self._results.append((claim, result))
                self._completed[endpoint_id] += 1
                if len(self._results) >= FLUSH_N:
                    self.wake.set()
            # No thread is woken for the slot this frees: this one takes the next claim itself (`serve`
            # wakes another only if more is ready than it takes). Waking one here woke a sender for every
            # attempt, to find nothing and sleep again, at the cost of a context switch and the GIL.
            self._mark_ready(endpoint_id, notify=False)

    def _mark_ready(self, endpoint_id: str, *, notify: bool = True) -> None:
        if (
            endpoint_id not in self._is_ready
            and self._queued.get(endpoint_id)
            and self._in_flight[endpoint_id] < self.cap
        ):
            self._ready.append(endpoint_id)
            self._is_ready.add(endpoint_id)
            if notify:
                self._cond.notify()

    # --- the database thread ------------------------------------------------------------------------

    def endpoints_set(self, found: dict[str, tuple[str, list[str]]]) -> None:
        """Endpoints' URLs and active secrets as just read: claims sent from now on use them, for the
        next ENDPOINTS_FRESH_S; past that, queued claims are given back unsent until the next read."""
        with self._cond:
            self._endpoints.update(found)
            self._fresh_until = time.monotonic() + ENDPOINTS_FRESH_S

    def add(self, claims: list[Claim]) -> None:
        with self._cond:
            for claim in claims:
                self._queued.setdefault(claim.endpoint_id, deque()).append(claim)
                self._endpoints[claim.endpoint_id] = (claim.url, claim.secrets)
            for endpoint_id in {c.endpoint_id for c in claims}:
                self._mark_ready(endpoint_id)

    def take_done(self) -> tuple[list[tuple[Claim, Result]], list[Claim]]:
        """The results to record and the claims to release since the last call."""
        with self._cond:
            results, self._results = self._results, []
            expired, self._expired = self._expired, []
        return results, expired

    def drop(self, endpoint_ids: set[str] | None = None) -> list[Claim]:
        """Take the queued claims (of these endpoints; all without) out, to release them."""
        dropped: list[Claim] = []
        with self._cond:
            for endpoint_id in list(self._queued) if endpoint_ids is None else endpoint_ids:
                dropped.extend(self._queued.pop(endpoint_id, ()))
                self._is_ready.discard(endpoint_id)
            self._ready = deque(e for e in self._ready if e in self._is_ready)
        return dropped

    def wants(self) -> dict[str, int]:
        """How many more claims each known endpoint should get: up to about AHEAD_S of its recent rate
        (at least 2 x cap) queued or in flight, asked for once its queue is down to half that."""
        now = time.monotonic()
        dt = max(now - self._rates_at, 1e-3)
        weight = 1 - math.exp(-dt / RATE_TAU_S)
        self._rates_at = now
        wants: dict[str, int] = {}
        with self._cond:
            completed, self._completed = self._completed, Counter()
            for endpoint_id in set(self._queued) | set(self._in_flight) | set(completed):
                rate = self._rates.get(endpoint_id, 0.0)
                rate += (completed[endpoint_id] / dt - rate) * weight
                self._rates[endpoint_id] = rate
                target = min(MAX_AHEAD, max(2 * self.cap, math.ceil(rate * AHEAD_S)))
                queued = len(self._queued.get(endpoint_id, ()))
                self._low[endpoint_id] = target // 2
                held = queued + self._in_flight[endpoint_id]
                wants[endpoint_id] = target - held if queued <= target // 2 else 0
                if queued > 2 * target:  # it slowed down: give back what it will not send soon
                    queue = self._queued[endpoint_id]
                    self._expired.extend(queue.pop() for _ in range(queued - target))
        return wants

    def held(self) -> int:
        """Claims queued or in flight."""
        with self._cond:
            return sum(len(q) for q in self._queued.values()) + sum(self._in_flight.values())

    def endpoints_queued(self) -> set[str]:
        with self._cond:
            return {e for e, q in self._queued.items() if q}

    def idle(self) -> bool:
        """Nothing queued, in flight, or waiting to be recorded or released."""
        with self._cond:
            return not (any(self._queued.values()) or +self._in_flight or self._results or self._expired)

    def close(self) -> list[Claim]:
        """Stop the senders once their attempts in flight are done; returns the claims still queued."""
        dropped = self.drop()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        return dropped

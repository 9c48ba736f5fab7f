"""A Celery worker for some of the gateway's queues, as deploy/ runs them:

    python -m gateway.worker default          # expiry, refunds, cases, valuations, close, re-verification
    python -m gateway.worker scan             # one task per watched network per beat tick
    python -m gateway.worker webhooks         # delivery (each task sends on GATEWAY_WEBHOOK_CONCURRENCY threads)
    python -m gateway.worker all              # every queue in one worker (a small installation, the demo)
    python -m gateway.worker scan -- --loglevel DEBUG   # anything after -- goes to `celery worker`

The pool size of each queue's worker is GATEWAY_WORKER_CONCURRENCY_<QUEUE> (default 2 processes). The
worker's name is `<queues>@<host>`, so one host may run a worker per queue. The process becomes Celery's
(exec), so a service manager's signals reach it directly.
"""

from __future__ import annotations

import os
import sys

from gateway.env import env_number

DEFAULT_CONCURRENCY = 2


def queues_routed() -> list[str]:
    """Every queue the settings send work to: the default queue and each route's."""
    from gateway.celery import app

    queues = {app.conf.task_default_queue} | {
        route["queue"] for route in (app.conf.task_routes or {}).values() if "queue" in route
    }
    return sorted(queues)


def command(
    queues: list[str],
    *,
    python: str = sys.executable,
    pool: str | None = None,
    concurrency: int | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    known = queues_routed()
    unknown = [q for q in queues if q not in known]
    if unknown:
        raise SystemExit(
            f"unknown queue {', '.join(unknown)}: the gateway's queues are {', '.join(known)} (or all)"
        )
    if concurrency is None:
        concurrency = max(
            env_number(f"GATEWAY_WORKER_CONCURRENCY_{q.upper()}", DEFAULT_CONCURRENCY, minimum=1)
            for q in queues
        )
    argv = [python, "-m", "celery", "-A", "gateway", "worker"]
    argv += ["--queues", ",".join(queues), "--hostname", f"{'-'.join(queues)}@%h"]
    argv += ["--concurrency", str(concurrency)]
    if pool:
        argv += ["--pool", pool]
    return argv + (extra or [])


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    if len(argv) != 1:
        raise SystemExit(__doc__)
    queues = queues_routed() if argv[0] == "all" else [q for q in argv[0].split(",") if q]
    args = command(queues, extra=extra)
    os.execv(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])

"""gunicorn's configuration for the web process: `gunicorn -c python:gateway.gunicorn` (docs/OPERATIONS.md).

Every value can be changed from the environment (gunicorn's own GUNICORN_CMD_ARGS and command-line flags
also override it). gthread workers: a streamed export or a slow client holds a thread, not a process.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.env import env_number

_state = Path(os.environ.get("GATEWAY_STATE_DIR", Path(__file__).resolve().parent.parent / ".state"))
# The same directory the settings give the metrics files, set before any worker imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_state / "metrics"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
(_state / "tmp").mkdir(parents=True, exist_ok=True)

wsgi_app = "gateway.wsgi:application"
bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8000").split(",")
workers = env_number("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1) + 1, minimum=1)
worker_class = os.environ.get("GATEWAY_WEB_WORKER_CLASS", "gthread")
threads = env_number("GATEWAY_WEB_THREADS", 4, minimum=1)
timeout = env_number("GATEWAY_WEB_TIMEOUT_S", 60)  # 0: none (gunicorn)
graceful_timeout = env_number("GATEWAY_WEB_GRACEFUL_TIMEOUT_S", 30)
keepalive = 5
# Recycle workers now and then (jittered so they do not restart together): bounds any slow leak.
max_requests = env_number("GATEWAY_WEB_MAX_REQUESTS", 20000)  # 0: never recycled (gunicorn)
max_requests_jitter = max_requests // 10
# The workers' heartbeat files, under the state directory like every file the gateway writes.
worker_tmp_dir = str(_state / "tmp")
# Access log on stdout, with the request id the app answered (gateway/logs.py) to join it with app logs.
accesslog = os.environ.get("GATEWAY_WEB_ACCESS_LOG", "-") or None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" rid=%({x-request-id}o)s'
# gunicorn's control socket (`gunicornc`) is off: systemd's reload/stop or signals manage the master, and
# no socket file lands outside GATEWAY_STATE_DIR. GATEWAY_WEB_CONTROL_SOCKET=<path> turns it on there.
control_socket_disable = not os.environ.get("GATEWAY_WEB_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GATEWAY_WEB_CONTROL_SOCKET"]
# The client's address for the app comes from GATEWAY_TRUSTED_PROXIES (payments/ratelimit.py), not from
# gunicorn's forwarded-header handling.
forwarded_allow_ips = ""


def on_starting(server) -> None:
    """The master starts: the metrics files of this host's processes that no longer run are folded."""
    from gateway.metrics import multiprocess_dir_tidy

    multiprocess_dir_tidy()


def child_exit(server, worker) -> None:
    """A worker ended (recycled, killed, timed out): its counts are folded into the archive."""
    from gateway.metrics import multiprocess_dir_tidy

    multiprocess_dir_tidy()

"""Celery: the broker, the queues and their routes, and the beat's schedule of every periodic task (its
intervals are the settings of the parts they belong to)."""

import os

from celery.schedules import crontab

from gateway.env import env_number

from .console import GATEWAY_AUDIT_CHECKPOINT_S, GATEWAY_CASES_POLL_S
from .core import STATE_DIR, env_bool
from .finance import GATEWAY_CLOSE_AT, GATEWAY_REVERIFY_AT, GATEWAY_VALUATION_POLL_S

# Celery: production uses Redis or RabbitMQ; the demo uses a broker that needs no server.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = STATE_DIR / "broker"
    for sub in ("out", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
# A task whose worker process died under it (killed, out of memory) goes back to the queue for another
# worker: every task is idempotent, and a lost one would be a lost scan, close or delivery round.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Three queues, each scaled on its own (docs/OPERATIONS.md): `scan` (one task per network per tick, so a
# slow or dead node holds up neither other networks nor webhooks), `webhooks` (delivery) and `default`
# (everything else: expiry, refunds, cases, valuations, the close, re-verification). A worker takes the
# queues its `-Q` names: `-Q default,scan,webhooks` for one that does it all.
GATEWAY_SCAN_INTERVAL_S = env_number("GATEWAY_SCAN_INTERVAL_S", 5.0, positive=True)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "payments.tasks.scan_networks": {"queue": "scan"},
    "payments.tasks.scan_network": {"queue": "scan"},
    "payments.tasks.deliver_webhooks": {"queue": "webhooks"},
}
# Every file a gateway process writes lives under GATEWAY_STATE_DIR: the beat's schedule, the metrics of
# each process (prometheus-client's multiprocess files), export spools.
CELERY_BEAT_SCHEDULE_FILENAME = str(STATE_DIR / "celerybeat-schedule")


def _daily_at(hh_mm: str) -> crontab:
    """Every day at "HH:MM" (UTC)."""
    hour, minute = hh_mm.split(":")
    return crontab(hour=int(hour), minute=int(minute))


CELERY_BEAT_SCHEDULE = {
    "scan-networks": {
        "task": "payments.tasks.scan_networks",
        "schedule": GATEWAY_SCAN_INTERVAL_S,
        "options": {"expires": GATEWAY_SCAN_INTERVAL_S},
    },
    "expire-payment-intents": {"task": "payments.tasks.expire_due_intents", "schedule": 15.0},
    "settle-due-refunds": {"task": "payments.tasks.settle_due_refunds", "schedule": 60.0},
    "top-up-address-pools": {"task": "payments.tasks.top_up_address_pools", "schedule": 5.0},
    "purge-idempotency-records": {"task": "payments.tasks.purge_idempotency_records", "schedule": 3600.0},
    # the audit log's checkpoint (console.py)
    "audit-checkpoint": {
        "task": "support.tasks.audit_checkpoint",
        "schedule": GATEWAY_AUDIT_CHECKPOINT_S,
        "options": {"expires": 30},
    },
    # support cases from the event stream (console.py)
    "open-support-cases": {
        "task": "support.tasks.cases_open",
        "schedule": GATEWAY_CASES_POLL_S,
        "options": {"expires": 30},
    },
    # four-eyes approval requests past their time, every minute (console.py)
    "expire-approvals": {
        "task": "support.tasks.approvals_expire",
        "schedule": 60.0,
        "options": {"expires": 30},
    },
    # valuations of newly paid payments (finance.py)
    "value-paid-payments": {
        "task": "reconciliation.tasks.value_paid_payments",
        "schedule": GATEWAY_VALUATION_POLL_S,
        "options": {"expires": 30},
    },
    # the nightly re-verification (finance.py)
    "reverify-payments": {
        "task": "reconciliation.tasks.reverify_payments",
        "schedule": _daily_at(GATEWAY_REVERIFY_AT),
        "options": {"expires": 3600},
    },
    # the daily close of yesterday (finance.py)
    "close-yesterday": {
        "task": "reconciliation.tasks.close_yesterday",
        "schedule": _daily_at(GATEWAY_CLOSE_AT),
        "options": {"expires": 3600},
    },
    # the webhook delivery log past GATEWAY_WEBHOOK_LOG_DAYS, hourly (webhooks.py)
    "purge-webhook-log": {
        "task": "payments.tasks.purge_webhook_log",
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
    "deliver-webhooks": {
        "task": "payments.tasks.deliver_webhooks",
        "schedule": env_number("GATEWAY_WEBHOOK_POLL_S", 1.0, positive=True),
        "options": {"expires": 5},
    },
}

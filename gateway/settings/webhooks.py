"""Webhooks: allowed destinations, timeouts, retries, concurrency and the delivery log (the delivery
and purge beat entries: queues.py)."""

import os

from gateway.env import env_int_list, env_number

from .core import env_bool

# Webhooks (payments/webhooks). URLs must be https and public unless the operator allows plain http or
# some private networks (comma-separated CIDRs; the tests and the demo allow 127.0.0.0/8 and ::1).
GATEWAY_WEBHOOK_ALLOW_HTTP = env_bool("GATEWAY_WEBHOOK_ALLOW_HTTP", False)
GATEWAY_WEBHOOK_ALLOWED_NETWORKS = [
    n.strip() for n in os.environ.get("GATEWAY_WEBHOOK_ALLOWED_NETWORKS", "").split(",") if n.strip()
]
GATEWAY_WEBHOOK_TIMEOUT_S = env_number("GATEWAY_WEBHOOK_TIMEOUT_S", 10.0, positive=True)
# Delay before each attempt, counted from the previous one: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h, 14 h, 24 h (10 attempts over about 2.7 days).
GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = env_int_list(
    "GATEWAY_WEBHOOK_RETRY_SCHEDULE_S", "0,5,300,1800,7200,18000,36000,36000,50400,86400"
)
# An endpoint with no success for this long (and still failing) is disabled and flagged in the admin.
GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS = env_number("GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS", 120.0, positive=True)
# Attempts in flight per worker process (threads), and how long one drain task runs at most.
GATEWAY_WEBHOOK_CONCURRENCY = env_number("GATEWAY_WEBHOOK_CONCURRENCY", 16, minimum=1)
# At most this many attempts in flight per endpoint per worker process (a quarter of the threads): slow
# endpoints keep the rest.
GATEWAY_WEBHOOK_PER_ENDPOINT = env_number(
    "GATEWAY_WEBHOOK_PER_ENDPOINT", max(1, GATEWAY_WEBHOOK_CONCURRENCY // 4), minimum=1
)
GATEWAY_WEBHOOK_DRAIN_S = env_number("GATEWAY_WEBHOOK_DRAIN_S", 20.0, positive=True)
# The delivery log (deliveries delivered or failed for good, with their attempts) is kept this many days,
# then purged hourly; 0 keeps it for ever. Events themselves are never purged.
GATEWAY_WEBHOOK_LOG_DAYS = env_number("GATEWAY_WEBHOOK_LOG_DAYS", 90.0)

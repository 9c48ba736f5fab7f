"""Observability: health (/readyz) thresholds and the metrics endpoint."""

import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured

from gateway.env import env_number

from .core import env_list
from .queues import GATEWAY_SCAN_INTERVAL_S

# Health and metrics (gateway/health.py, gateway/metrics.py; docs/OPERATIONS.md). /readyz fails (503) when a
# watched network has had no successful scan for GATEWAY_READY_SCAN_MAX_AGE_S or is more than
# GATEWAY_READY_SCAN_MAX_LAG_BLOCKS behind its node, or when due webhook work has waited longer than
# GATEWAY_READY_WEBHOOK_BACKLOG_S; 0 leaves that check out. Each check gives up after GATEWAY_READY_TIMEOUT_S.
# (at least 1 ms: each check's statement_timeout is this in whole milliseconds, and 0 there means none)
GATEWAY_READY_TIMEOUT_S = env_number("GATEWAY_READY_TIMEOUT_S", 2.0, minimum=0.001)
GATEWAY_READY_CACHE_S = env_number("GATEWAY_READY_CACHE_S", 1.0)
GATEWAY_READY_SCAN_MAX_AGE_S = env_number(
    "GATEWAY_READY_SCAN_MAX_AGE_S", max(120.0, 12 * GATEWAY_SCAN_INTERVAL_S)
)
GATEWAY_READY_SCAN_MAX_LAG_BLOCKS = env_number("GATEWAY_READY_SCAN_MAX_LAG_BLOCKS", 50)
GATEWAY_READY_WEBHOOK_BACKLOG_S = env_number("GATEWAY_READY_WEBHOOK_BACKLOG_S", 300.0)
# /metrics answers a bearer token or clients in these networks (CIDRs), and nobody else (404): off until set.
GATEWAY_METRICS_TOKEN = os.environ.get("GATEWAY_METRICS_TOKEN", "")
GATEWAY_METRICS_ALLOWED_NETWORKS = env_list("GATEWAY_METRICS_ALLOWED_NETWORKS")
for _network in GATEWAY_METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"GATEWAY_METRICS_ALLOWED_NETWORKS: {_network!r} is not a network"
        ) from None
GATEWAY_METRICS_QUERY_TIMEOUT_S = env_number("GATEWAY_METRICS_QUERY_TIMEOUT_S", 5.0, minimum=0.001)

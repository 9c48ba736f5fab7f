"""Core Django settings: paths and the state directory, debug and the secret key, hosts, apps,
middleware, templates, languages and static files."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# The repository root (this file is gateway/settings/core.py).
BASE_DIR = Path(__file__).resolve().parents[2]
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
    "axes",  # admin login lockouts (limits.py)
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
    "axes.middleware.AxesMiddleware",  # admin login lockouts (limits.py)
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

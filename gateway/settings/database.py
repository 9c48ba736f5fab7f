"""The database: PostgreSQL only, from DATABASE_URL or an embedded server when unset."""

import os

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from gateway.env import env_number

from .core import STATE_DIR

if os.environ.get("DATABASE_URL"):
    DATABASE_URL = os.environ["DATABASE_URL"]
else:
    from gateway.embedded_db import embedded_database_url

    DATABASE_URL = embedded_database_url(STATE_DIR)
    os.environ["DATABASE_URL"] = DATABASE_URL  # child processes (worker, beat, server) share it

DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_number("DB_CONN_MAX_AGE", 60))}
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
    "connect_timeout", env_number("DB_CONNECT_TIMEOUT_S", 5, minimum=1)
)
_connect_timeout = str(DATABASES["default"]["OPTIONS"]["connect_timeout"]).strip()
if not _connect_timeout.isdigit() or int(_connect_timeout) < 1:
    # a connect_timeout in DATABASE_URL's query wins over DB_CONNECT_TIMEOUT_S; libpq waits for ever on 0
    raise ImproperlyConfigured(
        "connect_timeout in DATABASE_URL must be a whole number of seconds, at least 1"
    )
DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("TEST_DATABASE_NAME", "test_gateway")

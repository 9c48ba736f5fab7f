"""Numeric settings from the environment: a value that is not a number of the right kind, not finite,
or out of its range stops the process at start, naming the setting (`gateway.settings.core.env_number`),
instead of surfacing later as a loop, a stall or a guard that silently does nothing."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway.env import env_int_list, env_number
from tests.gateway.test_settings_production import clean_environment, manage

NAME = "GATEWAY_TEST_NUMBER"


@pytest.mark.parametrize(
    ("raw", "default", "bounds", "expected"),
    [
        (None, 50, {}, 50),
        ("", 50, {}, 50),
        ("  7 ", 50, {}, 7),
        ("0", 50, {}, 0),
        ("1", 50, {"minimum": 1}, 1),
        ("2.5", 5.0, {"positive": True}, 2.5),
        ("1e-3", 5.0, {"positive": True}, 0.001),
        ("0", 90.0, {}, 0.0),
    ],
)
def test_numbers_in_range_are_read(monkeypatch, raw, default, bounds, expected):
    if raw is None:
        monkeypatch.delenv(NAME, raising=False)
    else:
        monkeypatch.setenv(NAME, raw)
    value = env_number(NAME, default, **bounds)
    assert value == expected and type(value) is type(default)


@pytest.mark.parametrize(
    ("raw", "default", "bounds"),
    [
        ("fifty", 50, {}),
        ("2.5", 50, {}),  # an integer setting
        ("-1", 50, {}),
        ("0", 50, {"minimum": 1}),
        ("0", 5.0, {"positive": True}),
        ("-0.0", 5.0, {"positive": True}),
        ("nan", 5.0, {}),
        ("inf", 5.0, {}),
        ("-inf", 5.0, {}),
        ("1_000x", 50, {}),
    ],
)
def test_anything_else_refuses_to_start_naming_the_setting(monkeypatch, raw, default, bounds):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_number(NAME, default, **bounds)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("GATEWAY_ADDRESS_POOL_BATCH", "0"),  # the pool top-up looped for ever on a batch of 0
        ("GATEWAY_ADDRESS_POOL_SIZE", "-5"),
        ("GATEWAY_SCAN_INTERVAL_S", "0"),  # the beat would schedule the scan without pause
        ("GATEWAY_WEBHOOK_CONCURRENCY", "sixteen"),
        ("DB_CONNECT_TIMEOUT_S", "0"),  # libpq waits for ever with 0
        ("GATEWAY_READY_TIMEOUT_S", "0.0004"),  # 0 ms of statement_timeout: no timeout at all
        ("GATEWAY_VALUATION_MAX_DELAY_S", "0"),  # every valuation "not valued" before a price is asked
        ("GATEWAY_WEBHOOK_RETRY_SCHEDULE_S", "0,5,"),
        ("GATEWAY_WEBHOOK_RETRY_SCHEDULE_S", "0,-5,300"),
    ],
)
def test_the_gateway_refuses_to_start_with_such_a_setting(name, raw):
    result = manage("check", env=clean_environment(DJANGO_DEBUG="1", **{name: raw}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr, result.stderr[-2000:]
    assert f"{name} must be" in result.stderr, result.stderr[-2000:]


@pytest.mark.django_db
def test_the_defaults_and_every_zero_the_docs_give_a_meaning_start():
    assert manage("check", env=clean_environment(DJANGO_DEBUG="1")).returncode == 0
    zeros = {
        "GATEWAY_READY_SCAN_MAX_AGE_S": "0",  # the scan check's age test left out (the chaos run sets it)
        "GATEWAY_READY_SCAN_MAX_LAG_BLOCKS": "0",
        "GATEWAY_READY_WEBHOOK_BACKLOG_S": "0",
        "GATEWAY_READY_CACHE_S": "0",
        "GATEWAY_WEBHOOK_LOG_DAYS": "0",  # kept for ever
        "GATEWAY_API_RATE_PER_SECOND": "0",  # no limit
        "GATEWAY_CHECKOUT_RATE_PER_MINUTE": "0",
        "GATEWAY_API_KEY_CACHE_S": "0",
        "DB_CONN_MAX_AGE": "0",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
    }
    result = manage("check", env=clean_environment(DJANGO_DEBUG="1", **zeros))
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, [0, 5, 300]), ("", [0, 5, 300]), ("1", [1]), (" 0, 2 ,4 ", [0, 2, 4])]
)
def test_integer_lists_are_read(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(NAME, raising=False)
    else:
        monkeypatch.setenv(NAME, raw)
    assert env_int_list(NAME, "0,5,300") == expected


@pytest.mark.parametrize("raw", ["0,5,", ",", "0.5", "1,-1", "a,b", "nan"])
def test_other_lists_refuse_to_start_naming_the_setting(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_int_list(NAME, "0,5,300")


def test_a_maximum_is_kept(monkeypatch):
    monkeypatch.setenv(NAME, "65536")
    with pytest.raises(ImproperlyConfigured, match="at most 65535"):
        env_number(NAME, 8000, minimum=1, maximum=65535)
    monkeypatch.setenv(NAME, "65535")
    assert env_number(NAME, 8000, minimum=1, maximum=65535) == 65535


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["connect_timeout=0", "connect_timeout=soon"])
def test_a_connect_timeout_in_the_database_url_is_checked_too(query):
    env = clean_environment(DJANGO_DEBUG="1")
    env["DATABASE_URL"] += ("&" if "?" in env["DATABASE_URL"] else "?") + query
    result = manage("check", env=env)
    assert result.returncode != 0 and "connect_timeout in DATABASE_URL" in result.stderr, result.stderr[
        -2000:
    ]


@pytest.mark.parametrize(
    ("module", "name", "raw"),
    [
        ("gateway.gunicorn", "WEB_CONCURRENCY", "0"),  # gunicorn starts with no worker at all
        ("gateway.gunicorn", "GATEWAY_WEB_THREADS", "four"),
    ],
)
def test_the_web_process_configuration_refuses_such_a_setting_too(module, name, raw):
    import subprocess
    import sys

    env = clean_environment(**{name: raw})
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and f"{name} must be" in result.stderr, result.stderr[-2000:]

"""Production settings, checked in a fresh process as an operator would start the gateway: without a
secret key it refuses to start; with the production environment README documents, Django's own
deployment check (`manage.py check --deploy`) finds nothing to warn about."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.integration.test_scan_crash_and_rescan import _database_url

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any of the gateway's settings (the tests set development keys),
    with the test database so that no embedded server is started."""
    prefixes = ("DJANGO_", "GATEWAY_", "CACHE_URL", "CELERY_", "DATABASE_URL", "SECURE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {"DJANGO_SETTINGS_MODULE": "gateway.settings", "DATABASE_URL": _database_url()} | extra


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_without_a_secret_key_production_refuses_to_start():
    # before: it started with a constant key published in the source
    result = manage("check", env=clean_environment(DJANGO_DEBUG="0"))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY is not set" in result.stderr, result.stderr[-2000:]


def test_without_a_key_for_secrets_at_rest_production_refuses_to_start():
    key = secrets.token_urlsafe(50)
    result = manage("check", env=clean_environment(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=key))
    assert result.returncode != 0 and "GATEWAY_SECRETS_KEYS is not set" in result.stderr, result.stderr[
        -2000:
    ]
    bad = clean_environment(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=key, GATEWAY_SECRETS_KEYS="not-a-key")
    result = manage("check", env=bad)
    assert result.returncode != 0 and "is not a Fernet key" in result.stderr


def test_debug_off_is_the_default_and_refuses_too():
    result = manage("check", env=clean_environment())
    assert result.returncode != 0 and "DJANGO_SECRET_KEY is not set" in result.stderr


def documented_production_environment() -> dict[str, str]:
    """The variables of README's Production section (its `sh` block of NAME=value lines), with each
    <placeholder> filled in as README says to generate it."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Production", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's Production section has no sh block of variables"
    generate = {
        "DJANGO_SECRET_KEY": lambda: secrets.token_urlsafe(50),
        "GATEWAY_SECRETS_KEYS": lambda: Fernet.generate_key().decode(),
    }
    env = {}
    for line in block.group(1).splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line:
            continue
        name, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if "<" in value:
            if name == "DATABASE_URL":
                value = _database_url()
            else:
                assert name in generate, f"README placeholder in {name} that this test cannot fill in"
                value = generate[name]()
        env[name] = value
    return env


def test_the_documented_production_environment_passes_check_deploy_without_warnings():
    production = documented_production_environment()
    assert production["DJANGO_DEBUG"] == "0"
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=clean_environment(**production))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_warns_without_the_https_settings():
    """The same check on the bare minimum (keys only) does warn: the test above is not vacuous."""
    production = documented_production_environment()
    minimal = {
        k: v for k, v in production.items() if k in {"DJANGO_DEBUG", "DJANGO_SECRET_KEY"} or "KEYS" in k
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=clean_environment(**minimal))
    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr  # SECURE_HSTS_SECONDS
    assert "payments.W001" in result.stdout + result.stderr  # rate limits counted per process

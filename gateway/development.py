"""The development environment of the demo, the test suite and the benchmarks, which opt in explicitly by
calling `development_environment_use()` before Django loads its settings: generated keys, and plain http
on 127.0.0.1. Production sets its own keys (the settings refuse to start without them when DEBUG is
off) and keeps the secure defaults."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """The same state directory as the settings' (GATEWAY_STATE_DIR, default `.state`)."""
    return Path(os.environ.get("GATEWAY_STATE_DIR", BASE_DIR / ".state"))


# Plain http on 127.0.0.1: no redirect to https, cookies sent over http.
PLAIN_HTTP = {
    "DJANGO_SECURE_SSL_REDIRECT": "0",
    "DJANGO_SESSION_COOKIE_SECURE": "0",
    "DJANGO_CSRF_COOKIE_SECURE": "0",
}


def development_environment_use(directory: Path | None = None) -> dict[str, str]:
    """Generated keys (`development_keys_use`) and plain http (`PLAIN_HTTP`), where not set already."""
    for name, value in PLAIN_HTTP.items():
        os.environ.setdefault(name, value)
    return development_keys_use(directory)


def development_keys_use(directory: Path | None = None) -> dict[str, str]:
    """Set DJANGO_SECRET_KEY and GATEWAY_SECRETS_KEYS, where unset, to random keys generated once and kept
    in `dev-keys.json` under the state directory (readable by the owner only), so that a restart still
    reads the webhook secrets it encrypted. Returns the keys set (or already set)."""
    directory = directory or state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "dev-keys.json"
    generated = {
        "DJANGO_SECRET_KEY": "dev-" + secrets.token_urlsafe(48),
        "GATEWAY_SECRETS_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        keys = {**generated, **json.loads(path.read_text())}
    else:
        with os.fdopen(fd, "w") as out:
            json.dump(generated, out)
        keys = generated
    for name, value in keys.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in keys}

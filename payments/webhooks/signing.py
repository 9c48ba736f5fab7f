"""Standard Webhooks (https://www.standardwebhooks.com) signing.

A signature is `v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), where `key` is the
base64-decoded part of a `whsec_` secret, `id` the event id (stable across retries and replays) and
`timestamp` whole seconds since the epoch. During a secret rotation's overlap the header carries one
signature per secret, separated by spaces, and a receiver accepts the message if any of them verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_secrets
from collections.abc import Sequence

from payments.errors import InvalidRequest

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def secret_generate() -> str:
    """A new endpoint secret (shown to the merchant once)."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidRequest("a webhook secret starts with whsec_", code="invalid_webhook_secret")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("a webhook secret is whsec_ and base64", code="invalid_webhook_secret") from None
    if len(key) < 24:
        raise InvalidRequest("a webhook secret holds at least 24 bytes", code="invalid_webhook_secret")
    return key


def signature(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the message."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(*, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every active secret (the current one first)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret=s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets
        ),
    }

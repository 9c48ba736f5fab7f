"""Secrets at rest that must stay reversible (webhook signing secrets: HMAC needs the key itself), as
Fernet tokens (AES-128-CBC + HMAC-SHA256) under the operator's keys in GATEWAY_SECRETS_KEYS: the first
key encrypts, every key listed decrypts. A database dump alone holds only tokens; the keys live in the
environment. Rotation: put a new key first, run `manage.py rotate_secrets_key`, then drop the old key."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUndecryptable(RuntimeError):
    """A stored token that none of the configured keys opens: an operator error (a key was removed before
    `rotate_secrets_key` ran, or the database belongs to another installation), never a client's."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _keys() -> MultiFernet:
    return _fernet(tuple(settings.GATEWAY_SECRETS_KEYS))


def secret_encrypt(plaintext: str) -> str:
    """A Fernet token of `plaintext` under the first key."""
    return _keys().encrypt(plaintext.encode()).decode()


def secret_decrypt(token: str) -> str:
    """The plaintext of a token made by `secret_encrypt` under any of the configured keys."""
    try:
        return _keys().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUndecryptable(
            "a stored secret cannot be decrypted with any key in GATEWAY_SECRETS_KEYS (keep the old key "
            "listed until `manage.py rotate_secrets_key` has run)"
        ) from None


def secret_reencrypt(token: str) -> str:
    """The same plaintext under the first key (keeping the token's original timestamp)."""
    try:
        return _keys().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUndecryptable(
            "a stored secret cannot be decrypted with any key in GATEWAY_SECRETS_KEYS"
        ) from None

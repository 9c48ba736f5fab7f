"""Public identifiers: a type prefix and 24 random base62 characters (about 143 bits)."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def public_id(prefix: str, length: int = 24) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def merchant_id() -> str:
    return public_id("mer")


def intent_id() -> str:
    return public_id("pi")


def event_id() -> str:
    return public_id("evt")


def endpoint_id() -> str:
    return public_id("we")


def checkout_token() -> str:
    return secrets.token_urlsafe(24)

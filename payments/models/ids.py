"""Public identifiers: a type prefix and 24 random base62 characters, the first a letter (about 142 bits).

The letter first keeps an id the same through the Django admin's URL quoting: `unquote` reads "_" and two
hex digits as an escaped character ("pi_26Qk..." would become "pi&Qk..."), and every such escape begins
with a digit. The admin's own links quote ids anyway; a link built from a raw id (a test, a support email,
an older page) then still opens the right object."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def public_id(prefix: str, length: int = 24) -> str:
    """`prefix_` and `length` characters, each uniform over its alphabet (letters first, then base62), from
    one read of the system's random source (not one per character: a create makes three ids)."""
    picked: list[str] = []
    while len(picked) < length:
        for byte in secrets.token_bytes(2 * length):
            # Rejection sampling keeps every character equally likely: 208 = 4 x 52, 248 = 4 x 62.
            if not picked:
                if byte < 208:
                    picked.append(string.ascii_letters[byte % 52])
            elif byte < 248:
                picked.append(_ALPHABET[byte % 62])
            if len(picked) == length:
                break
    return prefix + "_" + "".join(picked)


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

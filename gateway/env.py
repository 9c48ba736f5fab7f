"""Numbers from the environment, checked when a process starts. Imported by the settings and by the
processes' own configuration (gunicorn's, the worker's, the demo's), so nothing here touches Django's
settings."""

from __future__ import annotations

import math
import os

from django.core.exceptions import ImproperlyConfigured


def env_number(
    name: str,
    default: int | float,
    *,
    minimum: int | float = 0,
    maximum: int | float | None = None,
    positive: bool = False,
) -> int | float:
    """A numeric setting: an integer if `default` is one, else a finite number, at least `minimum` (above
    0 with `positive`) and at most `maximum`. Anything else stops the process at start with the
    setting's name: a typo, a negative count or a zero interval would otherwise show up later as a loop,
    a stall or a guard that silently does nothing. Unset or empty: `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    kind = int if isinstance(default, int) else float
    value = _number(kind, raw)
    if (
        value is None
        or value < minimum
        or (positive and value <= 0)
        or (maximum is not None and value > maximum)
    ):
        expected = "an integer" if kind is int else "a number"
        bound = "above 0" if positive else f"at least {minimum}"
        if maximum is not None:
            bound += f" and at most {maximum}"
        raise ImproperlyConfigured(f"{name} must be {expected} {bound}, not {raw!r}")
    return value


def env_int_list(name: str, default: str, *, minimum: int = 0) -> list[int]:
    """A comma-separated list of integers, each at least `minimum`, at least one (same refusal)."""
    raw = os.environ.get(name, "").strip() or default
    values = [_number(int, part.strip()) for part in raw.split(",")]
    if any(v is None or v < minimum for v in values):  # split gives at least one part
        raise ImproperlyConfigured(
            f"{name} must be integers of at least {minimum} separated by commas, not {raw!r}"
        )
    return values


def _number(kind: type, raw: str) -> int | float | None:
    try:
        value = kind(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None

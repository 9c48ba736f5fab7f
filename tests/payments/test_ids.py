"""Public ids: prefix, 24 characters, a letter first, every character uniform over its alphabet."""

from __future__ import annotations

import string
from collections import Counter

from payments.models import ids


def test_shape():
    for _ in range(200):
        value = ids.public_id("pi")
        prefix, _, rest = value.partition("_")
        assert prefix == "pi" and len(rest) == 24
        assert rest[0] in string.ascii_letters
        assert set(rest) <= set(string.ascii_letters + string.digits)
    assert len(ids.public_id("re", length=5)) == len("re_") + 5


def test_every_character_is_drawn_and_roughly_uniform():
    n = 4000
    firsts = Counter(ids.public_id("x")[2] for _ in range(n))
    others = Counter(c for _ in range(n) for c in ids.public_id("x")[3:])
    assert set(firsts) == set(string.ascii_letters)
    assert set(others) == set(string.ascii_letters + string.digits)
    expected = n * 23 / 62  # about 1,484 draws per character
    assert all(abs(count - expected) < 0.2 * expected for count in others.values())


def test_ids_differ():
    assert len({ids.intent_id() for _ in range(10_000)}) == 10_000

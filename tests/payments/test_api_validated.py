"""`serializers.validated`: a serializer built once per thread validates exactly as a fresh one does."""

from __future__ import annotations

import threading

import pytest
from rest_framework import serializers

from payments.api import serializers as module
from payments.api.serializers import PaymentIntentCreateSerializer, SelectAssetSerializer, validated
from tests.payments.test_api_bad_input import CASES, GOOD, body_with

BODIES = [
    GOOD,
    GOOD | {"currency": " usd ", "asset": "usdc", "metadata": {"a": "b"}, "expires_in_minutes": "30"},
    {"amount": "10.00", "currency": "USD"},
    {},
    None,
    [],
    "text",
    {"amount": None, "currency": None, "colour": "red"},
    GOOD | {"merchant_order_id": 42, "customer_id": ["x"], "success_url": "https://shop.example/done"},
    *[body_with(changes) for _, changes, *_ in CASES],
]


def fresh(serializer_class, data):
    serializer = serializer_class(data=data)
    try:
        serializer.is_valid(raise_exception=True)
    except serializers.ValidationError as exc:
        return "error", exc.detail
    return "ok", dict(serializer.validated_data)


def reused(serializer_class, data):
    try:
        return "ok", dict(validated(serializer_class, data))
    except serializers.ValidationError as exc:
        return "error", exc.detail


def codes(outcome):
    kind, detail = outcome
    return kind, detail if kind == "ok" else serializers.ValidationError(detail).get_codes()


@pytest.mark.parametrize("body", BODIES)
def test_same_data_or_same_errors_as_a_fresh_serializer(body):
    for _ in range(2):  # the second run uses the serializer the first one built
        assert reused(PaymentIntentCreateSerializer, body) == fresh(PaymentIntentCreateSerializer, body)
        assert codes(reused(PaymentIntentCreateSerializer, body)) == codes(
            fresh(PaymentIntentCreateSerializer, body)
        )


def test_one_serializer_per_class_and_thread():
    validated(SelectAssetSerializer, {"asset": "btc", "network": "bitcoin"})
    validated(PaymentIntentCreateSerializer, GOOD)
    mine = dict(module._built.by_class)
    assert set(mine) == {SelectAssetSerializer, PaymentIntentCreateSerializer}
    seen = {}

    def other():
        validated(PaymentIntentCreateSerializer, GOOD)
        seen.update(module._built.by_class)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen[PaymentIntentCreateSerializer] is not mine[PaymentIntentCreateSerializer]

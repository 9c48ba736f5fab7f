"""Refunds on a real EVM node (anvil, the 6-decimal TestUSDC), below the browser: requests racing for the
same payment on real parallel PostgreSQL connections never refund more than was received, and a transfer
of another amount to the destination is not accepted while the exact one is, from any account."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from devchain.anvil import token_transfer, token_units
from payments import services
from payments.chains.evm import EvmBackend
from payments.models import NetworkAsset, PaymentIntent, Refund
from payments.scanning import network_scan
from tests.factories import make_api_key, make_merchant
from tests.integration.test_concurrency import client_for, run_parallel

pytestmark = pytest.mark.django_db(transaction=True)

SCOPES = ("payments:read", "refunds:read", "refunds:write")


def scan(backend):
    return network_scan(backend=backend, now=timezone.now())


def paid_intent(node, token, backend, merchant, amount: str = "30") -> PaymentIntent:
    na = NetworkAsset.objects.select_related("asset", "network").get(
        asset__code="USDC", network__code="evm-local"
    )
    data = services.IntentInput(price_amount=Decimal(amount), price_currency="USDC", network_asset=na)
    intent = services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units(amount))
    node.mine(2)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "paid"
    return intent


def test_concurrent_refund_requests_never_exceed_what_was_received(local_usdc):
    node, token = local_usdc
    backend = EvmBackend("evm-local", node.url)
    merchant = make_merchant()
    _, secret = make_api_key(merchant, scopes=SCOPES)
    intent = paid_intent(node, token, backend, merchant)  # 30 USDC received

    def request(_):
        response = client_for(secret).post(
            "/api/v1/refunds",
            {
                "payment_intent": intent.pk,
                "amount": {"kind": "custom", "value": "12"},
                "reason": "the customer returned part of the order",
            },
            format="json",
        )
        return response.status_code, response.json()

    # Eight requests of 12 USDC at the same instant: two fit in 30, the others are refused, none half-made.
    results = run_parallel(8, list(range(8)), request)
    codes = sorted(code for code, _ in results)
    assert codes == [201, 201] + [409] * 6, results
    assert {body["error"]["code"] for code, body in results if code == 409} == {"refund_exceeds_received"}
    assert Refund.objects.filter(intent=intent).count() == 2
    # What is left (6 USDC) can still be refunded, and then nothing more.
    left = client_for(secret).post(
        "/api/v1/refunds",
        {"payment_intent": intent.pk, "amount": {"kind": "received"}, "reason": "the rest of the order back"},
        format="json",
    )
    assert left.status_code == 201 and left.json()["amount"] == {"value": "6.000000", "base_units": "6000000"}
    more = client_for(secret).post(
        "/api/v1/refunds",
        {
            "payment_intent": intent.pk,
            "amount": {"kind": "custom", "value": "0.000001"},
            "reason": "one more unit",
        },
        format="json",
    )
    assert more.status_code == 409 and more.json()["error"]["code"] == "refund_exceeds_received"


def test_a_wrong_amount_is_not_accepted_and_the_exact_amount_from_anyone_is(local_usdc):
    node, token = local_usdc
    backend = EvmBackend("evm-local", node.url)
    merchant = make_merchant()
    intent = paid_intent(node, token, backend, merchant, "30")
    customer = node.accounts[4]
    refund = services.refund_create(
        intent_id=intent.pk,
        amount_kind="custom",
        value="10",
        reason="one item was out of stock",
        requested_by="test",
        approved=True,
        destination=customer,
        now=timezone.now(),
    )
    assert refund.state == "awaiting_payment"
    # 9.99 USDC reaches the destination: seen, not accepted.
    token_transfer(node.w3, token, node.accounts[1], customer, token_units("9.99"))
    node.mine(3)
    scan(backend)
    refund.refresh_from_db()
    assert (refund.state, refund.observation_id) == ("awaiting_payment", None)
    # Exactly 10 USDC, from an account that has nothing to do with the merchant: accepted.
    token_transfer(node.w3, token, node.accounts[1], node.accounts[5], token_units("10"))
    token_transfer(node.w3, token, node.accounts[5], customer, token_units("10"))
    scan(backend)
    refund.refresh_from_db()
    assert refund.state == "detected"
    node.mine(1)
    scan(backend)
    refund.refresh_from_db()
    assert refund.state == "confirmed" and int(refund.observation.amount_base_units) == 10_000_000
    intent = PaymentIntent.objects.get(pk=intent.pk)
    # A partial refund keeps the payment's state and shows what was paid back.
    assert (intent.state, int(intent.amount_refunded_base_units)) == ("paid", 10_000_000)
    types = list(intent.events.order_by("sequence").values_list("type", flat=True))
    assert [t for t in types if t.startswith("refund.")] == [
        "refund.created",
        "refund.approved",
        "refund.detected",
        "refund.succeeded",
    ]


def test_support_attaches_a_refund_payment_the_scanner_did_not_see(local_usdc):
    from payments.errors import Conflict
    from payments.services.attach import refund_transaction_attach

    node, token = local_usdc
    backend = EvmBackend("evm-local", node.url)
    intent = paid_intent(node, token, backend, make_merchant(), "30")
    customer = node.accounts[4]
    refund = services.refund_create(
        intent_id=intent.pk,
        amount_kind="custom",
        value="5",
        reason="a voucher was not applied",
        requested_by="test",
        approved=True,
        destination=customer,
        now=timezone.now(),
    )
    wrong = token_transfer(node.w3, token, node.accounts[1], customer, token_units("4"))
    right = token_transfer(node.w3, token, node.accounts[1], customer, token_units("5"))
    elsewhere = token_transfer(node.w3, token, node.accounts[1], node.accounts[7], token_units("5"))
    node.mine(2)  # no scan: as if the scanner were down
    with pytest.raises(Conflict) as refused:
        refund_transaction_attach(refund=refund, tx_hash=elsewhere, now=timezone.now())
    assert refused.value.code == "tx_pays_another_address"
    with pytest.raises(Conflict) as refused:
        refund_transaction_attach(refund=refund, tx_hash=wrong, now=timezone.now())
    assert refused.value.code == "tx_wrong_amount"
    refund = refund_transaction_attach(refund=refund, tx_hash=right, now=timezone.now())
    # Counted against the tip the gateway knows (the last scan's): confirmed once the scanner runs again.
    assert (refund.state, refund.observation.tx_hash) == ("detected", right)
    scan(backend)
    refund.refresh_from_db()
    assert refund.state == "confirmed"

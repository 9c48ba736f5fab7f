"""Chain watching on a real EVM node (anvil) with a real 6-decimal ERC-20: the scanner turns blocks
into observations, and the payment's state path and events follow."""

from __future__ import annotations

import pytest
from django.utils import timezone

from payments import services
from payments.chains.evm import EvmBackend
from payments.models import Asset, ChainObservation, Network, NetworkAsset, PaymentIntent
from payments.scanning import network_scan
from tests.factories import make_merchant
from tests.nodes.anvil import mint, token_transfer, token_units

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_usdc(anvil_token):
    """evm-local pointed at this anvil, with USDC at the deployed contract (2 confirmations)."""
    node, token = anvil_token
    network = Network.objects.get(code="evm-local")
    network.rpc_url = node.url
    network.scan_start_height = node.block_number()
    network.save()
    NetworkAsset.objects.create(
        network=network,
        asset=Asset.objects.get(code="USDC"),
        contract_address=token.address.lower(),
        decimals=6,
        default_confirmations=2,
    )
    mint(node.w3, token, node.accounts[0], node.accounts[1], token_units("1000"))
    return node, token, EvmBackend("evm-local", node.url)


def new_intent(amount: str) -> PaymentIntent:
    na = NetworkAsset.objects.select_related("asset", "network").get(
        asset__code="USDC", network__code="evm-local"
    )
    data = services.IntentInput(
        price_amount=services.Decimal(amount), price_currency="USDC", network_asset=na
    )
    return services.payment_intent_create(merchant=make_merchant(), data=data, now=timezone.now())


def path(intent: PaymentIntent) -> list[str]:
    return list(intent.transitions.order_by("id").values_list("to_state", flat=True))


def scan(backend):
    return network_scan(backend=backend, now=timezone.now())


def test_exact_payment_becomes_paid_after_confirmations(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("49.5")
    scan(backend)
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("49.5"))
    report = scan(backend)
    assert report.transfers == 1
    intent.refresh_from_db(fields=["amount_seen_base_units"])
    assert PaymentIntent.objects.get(pk=intent.pk).state == "confirming"
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "confirming", "paid"]
    assert int(intent.amount_confirmed_base_units) == 49_500_000
    assert list(intent.events.order_by("sequence").values_list("type", flat=True))[-2:] == [
        "payment.confirming",
        "payment.paid",
    ]
    # scanning again finds nothing new and changes nothing
    scan(backend)
    assert ChainObservation.objects.count() == 1 and path(intent) == [
        "awaiting_payment",
        "confirming",
        "paid",
    ]


def test_reorg_drops_a_paid_payment_and_it_goes_back(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10")
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(2)
    scan(backend)
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"
    node.reorg(4)  # replaces the last 4 blocks, the payment's included; the transfer is dropped
    report = scan(backend)
    assert report.reorg_fork is not None
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "awaiting_payment"
    assert path(intent)[-2:] == ["paid", "awaiting_payment"]
    assert ChainObservation.objects.get().canonical is False

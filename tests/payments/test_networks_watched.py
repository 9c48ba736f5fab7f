"""A payment is offered (checkout) and accepted (API) only on a watched network: enabled and with a node
configured. A fresh database offers no development or test network, and no network without a node.

Before: a fresh database enabled all 11 networks, the checkout offered "ETH on Local development chain
(anvil)" beside mainnets nobody scanned, and the API accepted intents on them."""

from __future__ import annotations

import pytest

from payments.models import Network, PaymentIntent
from tests.factories import make_merchant

pytestmark = [pytest.mark.django_db, pytest.mark.networks_as_migrated]

# Written out here, not taken from the seed: the networks that are tests or development chains.
TEST_NETWORKS = {"bitcoin-testnet", "bitcoin-regtest", "litecoin-testnet", "litecoin-regtest", "evm-local"}
MAINNETS = {"bitcoin", "litecoin", "ethereum", "polygon", "base", "arbitrum"}


def create(api, network: str, asset: str = "ETH"):
    return api.post(
        "/api/v1/payment-intents",
        {"amount": "0.01", "currency": asset, "asset": asset, "network": network},
        format="json",
    )


def test_a_fresh_database_has_test_networks_disabled_and_no_node_anywhere():
    networks = dict(Network.objects.values_list("code", "enabled"))
    assert {code for code, enabled in networks.items() if not enabled} == TEST_NETWORKS
    assert {code for code, enabled in networks.items() if enabled} == MAINNETS
    assert not Network.objects.exclude(rpc_url="").exists()


@pytest.mark.parametrize("network", sorted(MAINNETS - {"bitcoin", "litecoin"}))
def test_the_api_refuses_a_network_without_a_node(api, network):
    response = create(api, network)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "network_not_watched",
        "message": f"network {network} is not watched by this gateway (no node configured)",
        "param": "network",
    }
    assert PaymentIntent.objects.count() == 0


def test_the_api_refuses_a_disabled_development_network(api):
    response = create(api, "evm-local")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "network_disabled")


def test_a_network_is_accepted_once_an_operator_gives_it_a_node(api):
    Network.objects.filter(code="base").update(rpc_url="https://base-node.example/rpc")
    assert create(api, "base").status_code == 201
    assert create(api, "ethereum").json()["error"]["code"] == "network_not_watched"


def test_select_asset_refuses_an_unwatched_network(api):
    Network.objects.filter(code="base").update(rpc_url="https://base-node.example/rpc")
    intent = api.post("/api/v1/payment-intents", {"amount": "10", "currency": "USD"}, format="json").json()
    response = api.post(
        f"/api/v1/payment-intents/{intent['id']}/select-asset",
        {"asset": "ETH", "network": "ethereum"},
        format="json",
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "network_not_watched")


def test_the_checkout_offers_only_watched_networks(client):
    from decimal import Decimal

    from django.utils import timezone

    from payments import services
    from payments.models import NetworkAsset

    Network.objects.filter(code="base").update(rpc_url="https://base-node.example/rpc")
    intent = services.payment_intent_create(
        merchant=make_merchant(),
        data=services.IntentInput(price_amount=Decimal("10"), price_currency="USD"),
        now=timezone.now(),
    )
    Network.objects.filter(code="base").update(rpc_url="")
    page = client.get(f"/pay/{intent.checkout_token}")
    assert page.status_code == 200
    for name in ("Local development chain", "Ethereum", "Base", "Bitcoin", "Litecoin regtest"):
        assert name.encode() not in page.content, name

    Network.objects.filter(code__in=["base", "evm-local"]).update(rpc_url="http://127.0.0.1:9")
    page = client.get(f"/pay/{intent.checkout_token}")
    assert b"Base" in page.content
    assert b"Local development chain" not in page.content  # has a node, but disabled
    assert b"Ethereum" not in page.content
    # a choice of an unwatched option is refused
    unwatched = NetworkAsset.objects.get(asset__code="ETH", network__code="ethereum")
    choice = client.post(f"/pay/{intent.checkout_token}/select", {"option": str(unwatched.pk)})
    assert choice.status_code == 400
    assert PaymentIntent.objects.get(pk=intent.pk).network_asset_id is None


def test_an_intent_nothing_could_pay_is_refused(api):
    """Before: with no network watched, an intent without an asset was created and its checkout page
    offered nothing."""
    response = api.post("/api/v1/payment-intents", {"amount": "10", "currency": "USD"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_payment_options"
    assert PaymentIntent.objects.count() == 0
    Network.objects.filter(code="base").update(rpc_url="https://base-node.example/rpc")
    assert (
        api.post("/api/v1/payment-intents", {"amount": "10", "currency": "USD"}, format="json").status_code
        == 201
    )
    # priced in an asset that nothing watched carries
    response = api.post("/api/v1/payment-intents", {"amount": "0.1", "currency": "BTC"}, format="json")
    assert response.json()["error"]["code"] == "no_payment_options"


def test_a_created_intent_whose_options_went_away_says_the_shop_cannot_take_payments(client):
    from decimal import Decimal

    from django.utils import timezone

    from payments import services

    Network.objects.filter(code="base").update(rpc_url="https://base-node.example/rpc")
    intent = services.payment_intent_create(
        merchant=make_merchant(),
        data=services.IntentInput(price_amount=Decimal("10"), price_currency="USD"),
        now=timezone.now(),
    )
    Network.objects.filter(code="base").update(rpc_url="")
    page = client.get(f"/pay/{intent.checkout_token}")
    assert b"This shop cannot take payments right now." in page.content
    assert b"Pick a currency and network below." not in page.content

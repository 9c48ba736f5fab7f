"""The beat's scan task as a worker runs it: one task per network, so a dead node stops only its own scan;
its error is logged with the network, counted for the admin, and never carries the node's credentials."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.utils import timezone

from devchain.anvil import free_port, token_transfer, token_units
from gateway.celery import app
from payments import services
from payments.models import Network, NetworkAsset, PaymentIntent, ScanCursor, ScanStatus
from payments.tasks import scan_network, scan_networks
from tests.factories import make_merchant

# The networks as a fresh database has them (no node anywhere): only what a test gives a node is scanned.
pytestmark = [pytest.mark.django_db, pytest.mark.networks_as_migrated]


@pytest.fixture
def eager_celery():
    """Tasks run in-process where they are sent (the fan-out's apply_async included), errors propagating."""
    before = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = before


def closed_port_url(template: str = "http://127.0.0.1:{port}") -> str:
    return template.format(port=free_port())  # free_port closes its socket: nothing listens there


def test_dead_node_does_not_stop_other_networks(local_usdc, eager_celery, caplog):
    node, token = local_usdc
    dead = Network.objects.get(code="ethereum")  # sorts before evm-local: the old loop died on it first
    dead.rpc_url = closed_port_url()
    dead.save()
    na = NetworkAsset.objects.select_related("asset", "network").get(
        asset__code="USDC", network__code="evm-local"
    )
    data = services.IntentInput(price_amount=Decimal("10"), price_currency="USDC", network_asset=na)
    intent = services.payment_intent_create(merchant=make_merchant(), data=data, now=timezone.now())
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(2)

    with caplog.at_level(logging.INFO):
        sent = scan_networks.delay().get()

    assert sorted(sent) == ["ethereum", "evm-local"]
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"  # the live network was scanned
    assert ScanCursor.objects.get(network__code="evm-local").height == node.block_number()
    status = ScanStatus.objects.get(network=dead)
    assert (status.errors_total, status.errors_in_a_row) == (1, 1)
    assert status.last_success_at is None  # what /readyz reports as "never scanned"
    live = ScanStatus.objects.get(network__code="evm-local")
    assert live.last_success_at is not None and live.lag_blocks == 0 and live.errors_in_a_row == 0
    assert "127.0.0.1" in status.last_error and status.last_error_at is not None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "ethereum" in errors[0] and "1 in a row" in errors[0]

    scan_networks.delay()
    status.refresh_from_db()
    assert (status.errors_total, status.errors_in_a_row) == (2, 2)

    dead.rpc_url = node.url  # the node is back: the count in a row starts again, the total stays
    dead.save()
    result = scan_network.delay("ethereum").get()
    assert result["error"] == "" and result["end"] == node.block_number()
    status.refresh_from_db()
    assert (status.errors_total, status.errors_in_a_row) == (2, 0)


def test_scan_tasks_go_to_the_scan_queue():
    for name in ("payments.tasks.scan_networks", "payments.tasks.scan_network"):
        assert app.amqp.router.route({}, name)["queue"].name == "scan"


SECRET_URLS = {
    # EVM JSON-RPC of a hosted node: the key is the path, and a proxy's password in the userinfo
    "ethereum": "http://user:s3cret@127.0.0.1:{port}/v3/APIKEY123",
    # Bitcoin Core: credentials in the userinfo, a wallet path
    "bitcoin": "http://user:s3cret@127.0.0.1:{port}/wallet/APIKEY123",
    # an Esplora API behind a key
    "litecoin": "esplora+http://user:s3cret@127.0.0.1:{port}/api/APIKEY123",
}


@pytest.mark.parametrize("code", sorted(SECRET_URLS))
def test_scan_errors_never_show_node_credentials(code, eager_celery, caplog):
    network = Network.objects.get(code=code)
    network.rpc_url = closed_port_url(SECRET_URLS[code])
    network.save()

    with caplog.at_level(logging.DEBUG):
        scan_networks.delay()
        result = scan_network.delay(code).get()

    status = ScanStatus.objects.get(network=network)
    assert status.errors_total == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(code in r.getMessage() for r in errors)
    for text in (caplog.text, status.last_error, str(result)):
        assert "s3cret" not in text
        assert "APIKEY123" not in text
    assert "127.0.0.1" in status.last_error  # still says which node failed

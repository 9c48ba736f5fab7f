"""The admin pages support and operators open first render, with the scanner lag beside each network."""

import pytest
from django.utils import timezone

from payments import services
from payments.models import Network, ScanCursor

pytestmark = pytest.mark.django_db


def test_admin_pages_render(admin_client, merchant):
    network = Network.objects.get(code="evm-local")
    ScanCursor.objects.create(network=network, height=90, block_hash="0x1")
    services.chain_tip_record(network_code="evm-local", height=100, block_hash="0x2", now=timezone.now())
    page = admin_client.get("/admin/payments/network/")
    assert page.status_code == 200
    assert b"Lag (blocks)" in page.content
    assert b'<td class="field-scan_lag">10</td>' in page.content
    for url in (
        "/admin/payments/paymentintent/",
        f"/admin/payments/merchant/{merchant.pk}/change/",
        "/admin/payments/networkasset/",
        "/admin/payments/apikey/",
    ):
        assert admin_client.get(url).status_code == 200, url

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


def test_payments_filter_by_flag(client):
    """Support finds the payments flagged for review: before, there was no flags filter."""
    from datetime import timedelta

    from tests.factories import make_staff
    from tests.payments.test_services_settle import block, new_intent, transfer

    late = new_intent(now=timezone.now() - timedelta(hours=1))
    plain = new_intent(late.merchant)
    now = timezone.now()
    services.expire_due_intents(now=now)
    services.observation_record(transfer=transfer(late, tx="0xlate", **block(150, now)), now=now)
    client.force_login(make_staff("view_paymentintent"))
    flagged = client.get("/admin/payments/paymentintent/?flag=late_payment")
    assert flagged.status_code == 200
    assert late.pk.encode() in flagged.content and plain.pk.encode() not in flagged.content
    everything = client.get("/admin/payments/paymentintent/")
    assert late.pk.encode() in everything.content and plain.pk.encode() in everything.content
    assert b"wrong network" in everything.content  # the filter offers every flag

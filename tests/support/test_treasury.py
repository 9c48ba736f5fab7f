"""Treasury addresses: checked for their network, never a payment address or another's treasury, declared
and retired only through dangerous actions (four-eyes by default), scoped to the user's merchants."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from payments import treasury
from payments.errors import Conflict, InvalidRequest
from payments.models import TreasuryAddress
from support.models import ApprovalRequest, AuditEntry, MerchantPolicy
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db

EIP55 = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's first example
REASON = "The merchant's cold wallet, confirmed on a call with their CFO."
ADMIN = ("add_treasuryaddress", "change_treasuryaddress", "view_treasuryaddress", "view_merchant")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def declare(client, merchant, address=EIP55, network="ethereum"):
    return client.post(
        reverse("admin:payments_treasuryaddress_declare"),
        {"merchant": merchant.pk, "network": network, "address": address, "label": "cold", "reason": REASON},
    )


def test_the_checks_refuse_what_cannot_be_a_treasury():
    shop, other = make_merchant("Shop"), make_merchant("Other", account=1)
    network, address = treasury.treasury_address_check(merchant=shop, network_code="ethereum", address=EIP55)
    assert (network.code, address) == ("ethereum", EIP55.lower())
    multisig = "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"  # a P2SH treasury (the Bitcoin wiki's example)
    assert (
        treasury.treasury_address_check(merchant=shop, network_code="bitcoin", address=multisig)[1]
        == multisig
    )
    with pytest.raises(InvalidRequest) as raised:
        treasury.treasury_address_check(merchant=shop, network_code="ethereum", address=EIP55[:-1] + "D")
    assert raised.value.code == "invalid_address"
    with pytest.raises(InvalidRequest):
        treasury.treasury_address_check(merchant=shop, network_code="nowhere", address=EIP55)
    paid_to = new_intent(shop).address.address
    with pytest.raises(Conflict) as raised:
        treasury.treasury_address_check(merchant=shop, network_code="ethereum", address=paid_to)
    assert raised.value.code == "address_is_a_payment_address"
    treasury.treasury_address_add(
        merchant=other, network_code="ethereum", address=EIP55, label="", now=timezone.now()
    )
    with pytest.raises(Conflict) as raised:
        treasury.treasury_address_check(merchant=shop, network_code="ethereum", address=EIP55.lower())
    assert raised.value.code == "treasury_exists" and "another merchant" in raised.value.message


def test_declaring_needs_a_second_person_by_default_and_the_maker_cannot_approve():
    shop = make_merchant("Shop")
    ann = make_staff(*ADMIN, "support.view_approvalrequest", merchants=[shop], username="ann")
    bob = make_staff(*ADMIN, "support.view_approvalrequest", merchants=[shop], username="bob")
    assert declare(client_for(ann), shop).status_code == 302
    approval = ApprovalRequest.objects.get(action="treasury.add")
    assert not TreasuryAddress.objects.exists()
    decide = reverse("admin:support_approvalrequest_decide", args=[approval.pk])
    assert client_for(ann).post(decide, {"approve": "1"}).status_code == 403
    client_for(bob).post(decide, {"approve": "1"})
    made = TreasuryAddress.objects.get()
    assert (made.merchant, made.network_id, made.address, made.label) == (
        shop,
        made.network_id,
        EIP55.lower(),
        "cold",
    )
    entry = AuditEntry.objects.get(action="treasury.add")
    assert entry.actor == "ann" and entry.after["approved_by"] == "bob" and entry.reason == REASON


def test_with_config_four_eyes_off_it_applies_at_once_and_retiring_keeps_the_row():
    shop = make_merchant("Shop")
    MerchantPolicy.objects.create(merchant=shop, config_four_eyes=False, updated_at=timezone.now())
    client = client_for(make_staff(*ADMIN, merchants=[shop]))
    assert declare(client, shop, address=EIP55.lower()).status_code == 302
    made = TreasuryAddress.objects.get()
    listing = client.get(reverse("admin:payments_treasuryaddress_changelist")).content.decode()
    assert EIP55.lower() in listing and "Retire…" in listing
    bad = declare(client, shop, address="0x123")
    assert bad.status_code == 400 and "invalid_address" in bad.content.decode()
    retire = reverse("admin:payments_treasuryaddress_retire", args=[made.pk])
    assert client.post(retire, {"reason": REASON}).status_code == 302
    made.refresh_from_db()
    assert made.retired_at is not None
    assert list(AuditEntry.objects.order_by("sequence").values_list("action", flat=True)) == [
        "treasury.add",
        "treasury.retire",
    ]


def test_only_a_merchant_admin_of_that_merchant_declares_or_retires():
    shop, other = make_merchant("Shop"), make_merchant("Other", account=1)
    theirs = treasury.treasury_address_add(
        merchant=other, network_code="ethereum", address=EIP55, label="", now=timezone.now()
    )
    outsider = client_for(make_staff(*ADMIN, merchants=[shop]))
    assert declare(outsider, other, address="0x" + "ab" * 20).status_code == 403
    retire = reverse("admin:payments_treasuryaddress_retire", args=[theirs.pk])
    assert outsider.post(retire, {"reason": REASON}).status_code == 404
    treasury.treasury_address_add(
        merchant=shop, network_code="ethereum", address="0x" + "cd" * 20, label="", now=timezone.now()
    )
    viewer = client_for(make_staff("view_treasuryaddress", "view_merchant", merchants=[shop]))
    assert declare(viewer, shop, address="0x" + "ab" * 20).status_code == 403
    assert "Retire…" not in viewer.get(reverse("admin:payments_treasuryaddress_changelist")).content.decode()
    assert (
        "0x" + "cd" * 20 in viewer.get(reverse("admin:payments_treasuryaddress_changelist")).content.decode()
    )
    assert not ApprovalRequest.objects.exists() and TreasuryAddress.objects.count() == 2

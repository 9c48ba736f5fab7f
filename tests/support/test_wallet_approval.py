"""A merchant's wallet key decides where its future payments go: adding or replacing one, and reactivating a
wallet, are dangerous actions with four-eyes by default (issue 12, item 8). Through the admin as merchant
admins holding only their permissions; addresses expected from embit, not from our derivation."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from payments.accounts import wallet_deactivate
from payments.models import Network, Wallet
from support.models import ApprovalRequest, AuditEntry, MerchantPolicy
from tests.factories import BIP84_ZPUB, account_key, make_merchant, make_staff
from tests.payments.test_wallet_keys import client as api_client
from tests.payments.test_wallet_keys import create_btc, embit_bech32

pytestmark = pytest.mark.django_db

REASON = "The merchant moved its funds to a new hardware wallet."
MERCHANT_ADMIN = ("view_wallet", "add_wallet", "change_wallet", "support.view_approvalrequest")
ADD = "/admin/payments/wallet/add/"
CHANGELIST = "/admin/payments/wallet/"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def shop():
    return make_merchant("Shop")


@pytest.fixture
def ann(shop):
    return make_staff(*MERCHANT_ADMIN, merchants=[shop], username="ann")


@pytest.fixture
def bob(shop):
    return make_staff(*MERCHANT_ADMIN, merchants=[shop], username="bob")


def new_key_form(shop, key: str, **extra) -> dict:
    return {
        "merchant": shop.pk,
        "chain": "bitcoin",
        "network": Network.objects.get(code="bitcoin").pk,
        "account_key": key,
        "reason": REASON,
        **extra,
    }


def decide(user, approval) -> int:
    url = reverse("admin:support_approvalrequest_decide", args=[approval.pk])
    return client_for(user).post(url, {"approve": "1"}).status_code


def test_a_new_key_waits_for_a_second_person_then_future_payments_go_to_it(shop, ann, bob):
    old = shop.wallets.get(chain="bitcoin")
    fresh = account_key("m/84'/0'/7'")
    response = client_for(ann).post(ADD, new_key_form(shop, fresh, replace="on"))

    approval = ApprovalRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:support_approvalrequest_change", args=[approval.pk])
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Approval request {approval.pk} sent; another person must approve it. Nothing changes until then."
    ]
    assert (approval.action, approval.status, approval.maker, approval.merchant) == (
        "wallet.add",
        "pending",
        ann,
        shop,
    )
    assert approval.payload == {
        "chain": "bitcoin",
        "network": "bitcoin",
        "account_key": fresh,
        "replaces": old.pk,
    }
    assert list(shop.wallets.filter(chain="bitcoin").values_list("pk", "is_active")) == [(old.pk, True)]
    # Until approved, payments still go to the old key.
    api = api_client(shop)
    assert create_btc(api, "before").json()["address"] == embit_bech32(BIP84_ZPUB, 0, "bc")

    assert decide(ann, approval) == 403  # the maker never approves their own
    assert ApprovalRequest.objects.get().status == "pending"
    assert decide(bob, approval) == 302

    assert ApprovalRequest.objects.get().status == "approved"
    new = shop.wallets.get(chain="bitcoin", is_active=True)
    old.refresh_from_db()
    assert (new.account_key, old.is_active) == (fresh, False)
    response = create_btc(api, "after")
    assert response.status_code == 201, response.json()
    assert response.json()["address"] == embit_bech32(fresh, 0, "bc")
    actions = list(AuditEntry.objects.order_by("sequence").values_list("action", "actor"))
    assert actions[-3:] == [
        ("approval.requested", "ann"),
        ("wallet.add", "ann"),
        ("approval.approved", "bob"),
    ]


def test_without_replace_an_active_wallet_is_a_form_error(shop, ann):
    response = client_for(ann).post(ADD, new_key_form(shop, account_key("m/84'/0'/7'")))
    assert response.status_code == 200
    body = response.content.decode()
    assert "(wallet_exists)" in body and "replace the active wallet" in body
    assert not ApprovalRequest.objects.exists()


def test_a_reason_is_required(shop, ann):
    response = client_for(ann).post(
        ADD, new_key_form(shop, account_key("m/84'/0'/7'"), replace="on", reason="ok")
    )
    assert response.status_code == 200 and b"at least 20 characters" in response.content
    assert not ApprovalRequest.objects.exists()


def test_with_config_four_eyes_off_the_key_is_added_at_once(shop, ann):
    MerchantPolicy.objects.create(merchant=shop, config_four_eyes=False, updated_at=timezone.now())
    tpub = account_key("m/84'/1'/5'", testnet=True)
    regtest = Network.objects.get(code="bitcoin-regtest")
    form = new_key_form(shop, tpub) | {"network": regtest.pk}
    response = client_for(ann).post(ADD, form)
    assert response.status_code == 302
    assert not ApprovalRequest.objects.exists()
    assert shop.wallets.get(network=regtest).account_key == tpub


def test_a_request_whose_wallet_changed_meanwhile_fails_and_changes_nothing(shop, ann, bob):
    old = shop.wallets.get(chain="bitcoin")
    client_for(ann).post(ADD, new_key_form(shop, account_key("m/84'/0'/7'"), replace="on"))
    wallet_deactivate(wallet=old)
    approval = ApprovalRequest.objects.get()
    assert decide(bob, approval) == 302
    approval.refresh_from_db()
    assert (approval.status, approval.result["error"]) == ("failed", "wallet_replaced_meanwhile")
    assert not Wallet.objects.filter(account_key=account_key("m/84'/0'/7'")).exists()


def test_reactivating_a_wallet_needs_a_second_person(shop, ann, bob):
    wallet = wallet_deactivate(wallet=shop.wallets.get(chain="litecoin"))
    as_ann = client_for(ann)
    page = as_ann.post(CHANGELIST, {"action": "reactivate", "_selected_action": [wallet.pk]})
    assert page.status_code == 200 and "needs another person's approval" in page.content.decode()
    assert not ApprovalRequest.objects.exists()

    as_ann.post(
        CHANGELIST, {"action": "reactivate", "_selected_action": [wallet.pk], "apply": "1", "reason": REASON}
    )
    approval = ApprovalRequest.objects.get()
    assert (approval.action, approval.payload) == ("wallet.reactivate", {"wallet": wallet.pk})
    wallet.refresh_from_db()
    assert not wallet.is_active

    assert decide(bob, approval) == 302
    wallet.refresh_from_db()
    assert wallet.is_active


def test_a_wallets_page_has_nothing_to_save_and_a_forged_save_changes_nothing():
    from django.test import Client

    from payments.models import Merchant
    from support.models import AuditEntry
    from tests.factories import make_merchant, make_staff

    shop = make_merchant("Shop")
    wallet = shop.wallets.get(chain="evm")
    client = Client()
    client.force_login(
        make_staff("view_wallet", "change_wallet", "add_wallet", merchants=[Merchant.objects.get(pk=shop.pk)])
    )
    page = client.get(f"/admin/payments/wallet/{wallet.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.post(f"/admin/payments/wallet/{wallet.pk}/change/", {"_save": "Save"}).status_code == 403
    assert not AuditEntry.objects.exists()

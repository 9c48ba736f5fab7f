"""One account key, one active wallet per address space (payments/accounts.py): a key another active wallet
uses is refused with `wallet_key_in_use` at every entry point (service, add_wallet, the admin), whatever
version prefix it is written with; re-adding a deactivated wallet's key continues its index sequence.

Expected addresses and key fingerprints come from embit, an implementation that is not ours."""

from __future__ import annotations

import hashlib
import importlib
import io

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.utils import timezone
from embit import script as embit_script
from embit.base58 import decode_check, encode_check
from embit.bip32 import HDKey
from rest_framework.test import APIClient

from payments.accounts import wallet_add, wallet_deactivate
from payments.errors import Conflict
from payments.models import Network, PaymentIntent, Wallet
from support.models import MerchantPolicy
from tests.factories import BIP84_ZPUB, ETH_ACCOUNT_XPUB, account_key, make_api_key, make_merchant
from tests.integration.test_concurrency import run_parallel

# SLIP-132's registry (github.com/satoshilabs/slips/blob/master/slip-0132.md).
XPUB, ZPUB, TPUB, VPUB = "0488b21e", "04b24746", "043587cf", "045f1cf6"


def spelled(key: str, version_hex: str) -> str:
    """The same key material under another SLIP-132 version (embit's Base58Check)."""
    return encode_check(bytes.fromhex(version_hex) + decode_check(key)[4:])


def embit_fingerprint(key: str) -> str:
    node = HDKey.from_string(spelled(key, XPUB if decode_check(key)[:4].hex() in (XPUB, ZPUB) else TPUB))
    return hashlib.sha256(node.chain_code + node.key.sec()).hexdigest()


def embit_bech32(key: str, index: int, hrp: str) -> str:
    node = HDKey.from_string(spelled(key, XPUB))
    return embit_script.p2wpkh(node.derive([0, index]).key).address({"bech32": hrp})


def client(merchant) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(merchant)[1]}")
    return api


def create_btc(api, order: str):
    body = {
        "amount": "0.001",
        "currency": "BTC",
        "asset": "BTC",
        "network": "bitcoin",
        "merchant_order_id": order,
    }
    return api.post("/api/v1/payment-intents", body, format="json")


@pytest.fixture
def other(db):
    return make_merchant("Other shop", wallets=False)


REASON = "The merchant moved to a new hardware wallet; ticket 812."


def one_person(merchant) -> None:
    """A policy under which one person changes the merchant's wallet keys (four-eyes is the default)."""
    MerchantPolicy.objects.create(merchant=merchant, config_four_eyes=False, updated_at=timezone.now())


# --- refused at every entry point ------------------------------------------------------------------


def test_a_key_in_use_by_another_merchant_never_makes_a_create_fail(api, merchant, other):
    """Today's defect: the second merchant's wallet was accepted, then every create of it hit the address
    pool's unique address (IntegrityError, a 500)."""
    assert create_btc(api, "a-1").status_code == 201
    try:
        wallet_add(
            merchant=other, chain="bitcoin", account_key=spelled(BIP84_ZPUB, XPUB), network_code="bitcoin"
        )
    except Conflict:
        pass
    response = create_btc(client(other), "b-1")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "no_wallet_for_network"
    assert create_btc(api, "a-2").status_code == 201


@pytest.mark.parametrize("version", [ZPUB, XPUB])
def test_service_refuses_a_key_in_use_in_any_spelling(merchant, other, version):
    with pytest.raises(Conflict) as exc:
        wallet_add(
            merchant=other, chain="bitcoin", account_key=spelled(BIP84_ZPUB, version), network_code="bitcoin"
        )
    assert exc.value.code == "wallet_key_in_use" and exc.value.http_status == 409
    assert merchant.name not in exc.value.message and merchant.pk not in exc.value.message
    with pytest.raises(Conflict) as exc:
        wallet_add(merchant=other, chain="evm", account_key=ETH_ACCOUNT_XPUB)
    assert exc.value.code == "wallet_key_in_use"
    assert not Wallet.objects.filter(merchant=other).exists()


def test_the_merchants_own_active_key_under_another_spelling_is_in_use(merchant):
    with pytest.raises(Conflict) as exc:
        wallet_add(
            merchant=merchant, chain="bitcoin", account_key=spelled(BIP84_ZPUB, XPUB), network_code="bitcoin"
        )
    assert exc.value.code == "wallet_key_in_use"


def test_add_wallet_command_refuses_a_key_in_use(merchant, other):
    with pytest.raises(CommandError, match="wallet_key_in_use"):
        call_command(
            "add_wallet",
            other.pk,
            "--chain",
            "bitcoin",
            "--xpub",
            spelled(BIP84_ZPUB, XPUB),
            stdout=io.StringIO(),
        )
    assert not Wallet.objects.filter(merchant=other).exists()


def test_admin_add_form_refuses_a_key_in_use_and_adds_through_the_service(admin_client, merchant, other):
    bitcoin = Network.objects.get(code="bitcoin")
    form = {
        "merchant": other.pk,
        "chain": "bitcoin",
        "network": bitcoin.pk,
        "account_key": spelled(BIP84_ZPUB, XPUB),
    }
    page = admin_client.post("/admin/payments/wallet/add/", form)
    assert page.status_code == 200
    assert b"wallet_key_in_use" in page.content
    assert not Wallet.objects.filter(merchant=other).exists()

    fresh = account_key("m/84'/0'/7'")
    # A new key is a dangerous action (support.dangerous_wallets): one person adds it at once only where
    # the merchant's policy says so, and gives a reason.
    one_person(other)
    page = admin_client.post("/admin/payments/wallet/add/", form | {"account_key": fresh, "reason": REASON})
    assert page.status_code == 302, page.content
    wallet = Wallet.objects.get(merchant=other)
    assert (wallet.chain, wallet.network_id, wallet.account_key) == ("bitcoin", bitcoin.pk, fresh)
    assert wallet.key_fingerprint == embit_fingerprint(fresh)
    assert wallet.address_space == "bc"


def test_the_same_key_on_another_address_space_is_not_in_use(merchant, other):
    """Every test network shares SLIP-44 coin type 1, so one seed gives Electrum and Electrum-LTC the same
    vpub: on networks with different address prefixes the key derives different addresses (the demo uses
    one tpub for bitcoin-regtest and litecoin-regtest)."""
    tpub = merchant.wallets.get(chain="litecoin").account_key
    wallet = wallet_add(merchant=merchant, chain="bitcoin", account_key=tpub, network_code="bitcoin-regtest")
    assert wallet.key_fingerprint == merchant.wallets.get(chain="litecoin").key_fingerprint
    assert wallet.address_space == "bcrt" and wallet.next_index == 0
    with pytest.raises(Conflict) as exc:  # but not twice on one
        wallet_add(
            merchant=other, chain="bitcoin", account_key=spelled(tpub, VPUB), network_code="bitcoin-regtest"
        )
    assert exc.value.code == "wallet_key_in_use"


def test_the_database_refuses_a_second_active_wallet_with_a_key(merchant, other):
    """The constraint behind the service's check: a write that skips the service fails too."""
    held = merchant.wallets.get(chain="bitcoin")
    with pytest.raises(IntegrityError, match="wallet_key_active_unique"), transaction.atomic():
        Wallet.objects.create(
            merchant=other,
            chain="bitcoin",
            network=held.network,
            account_key=spelled(BIP84_ZPUB, XPUB),
            key_fingerprint=embit_fingerprint(BIP84_ZPUB),
            address_space="bc",
        )


@pytest.mark.django_db(transaction=True)
def test_simultaneous_adds_of_one_key_make_one_wallet():
    merchants = [make_merchant(f"Shop {i}", wallets=False) for i in range(6)]

    def add(merchant):
        try:
            wallet_add(merchant=merchant, chain="evm", account_key=ETH_ACCOUNT_XPUB)
        except Conflict as exc:
            return exc.code
        return "added"

    results = run_parallel(6, merchants, add)
    assert sorted(results) == ["added"] + ["wallet_key_in_use"] * 5
    assert Wallet.objects.filter(chain="evm", is_active=True).count() == 1


# --- re-adding a deactivated wallet's key ----------------------------------------------------------


def test_readding_a_deactivated_wallets_key_continues_its_index_sequence(api, merchant, settings):
    settings.GATEWAY_ADDRESS_POOL_BATCH = 4
    first = [create_btc(api, f"a-{i}").json()["address"] for i in range(3)]
    old = merchant.wallets.get(chain="bitcoin")
    # Deactivated the way the merchant admin's checkbox did until now: the row alone.
    Wallet.objects.filter(pk=old.pk).update(is_active=False)
    out = io.StringIO()
    call_command(
        "add_wallet", merchant.pk, "--chain", "bitcoin", "--xpub", spelled(BIP84_ZPUB, XPUB), stdout=out
    )
    new = merchant.wallets.get(chain="bitcoin", is_active=True)
    old.refresh_from_db()
    assert new.pk != old.pk and new.next_index == old.next_index > 0

    responses = [create_btc(api, f"b-{i}") for i in range(6)]  # past one batch: the pool refills too
    assert [r.status_code for r in responses] == [201] * 6, [r.json() for r in responses]
    later = [r.json()["address"] for r in responses]
    assert later == [embit_bech32(BIP84_ZPUB, old.next_index + i, "bc") for i in range(6)]
    assert set(later).isdisjoint(first)
    assert set(
        PaymentIntent.objects.filter(address__address__in=later).values_list("wallet_id", flat=True)
    ) == {new.pk}


def test_another_merchant_may_take_a_deactivated_key_and_continues_after_it(api, merchant, other):
    assert create_btc(api, "a-1").status_code == 201
    old = wallet_deactivate(wallet=merchant.wallets.get(chain="bitcoin"))
    old.refresh_from_db()
    wallet = wallet_add(merchant=other, chain="bitcoin", account_key=BIP84_ZPUB, network_code="bitcoin")
    assert wallet.next_index == old.next_index
    response = create_btc(client(other), "b-1")
    assert response.status_code == 201, response.json()
    assert response.json()["address"] == embit_bech32(BIP84_ZPUB, old.next_index, "bc")


def test_reactivating_in_the_admin_continues_after_the_key_s_later_wallet(
    admin_client, merchant, other, settings
):
    settings.GATEWAY_ADDRESS_POOL_BATCH = 4
    api = client(merchant)
    assert create_btc(api, "a-1").status_code == 201
    first = merchant.wallets.get(chain="bitcoin")
    changelist = "/admin/payments/wallet/"
    one_person(merchant)  # reactivating is a dangerous action: applied at once by this policy only
    admin_client.post(changelist, {"action": "deactivate", "_selected_action": [first.pk]})
    first.refresh_from_db()
    assert not first.is_active

    second = wallet_add(merchant=other, chain="bitcoin", account_key=BIP84_ZPUB, network_code="bitcoin")
    other_api = client(other)
    assert all(create_btc(other_api, f"b-{i}").status_code == 201 for i in range(6))
    # While the other merchant's wallet holds the key, reactivating is refused with the code.
    reactivate = {"action": "reactivate", "_selected_action": [first.pk], "apply": "1", "reason": REASON}
    page = admin_client.post(changelist, reactivate, follow=True)
    assert b"wallet_key_in_use" in page.content
    first.refresh_from_db()
    assert not first.is_active

    admin_client.post(changelist, {"action": "deactivate", "_selected_action": [second.pk]})
    admin_client.post(changelist, reactivate)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.is_active and first.next_index == second.next_index
    # The first wallet's own unclaimed pool comes first (never handed out), then indexes after the other's.
    addresses = [create_btc(api, f"a-{i}").json()["address"] for i in range(2, 8)]
    assert len(set(addresses)) == 6
    assert addresses[-1] == embit_bech32(BIP84_ZPUB, second.next_index + 2, "bc")


def test_wallet_admin_pages_render_without_offering_edits(admin_client, merchant):
    wallet = merchant.wallets.get(chain="bitcoin")
    assert admin_client.get("/admin/payments/wallet/").status_code == 200
    assert admin_client.get("/admin/payments/wallet/add/").status_code == 200
    page = admin_client.get(f"/admin/payments/wallet/{wallet.pk}/change/")
    assert page.status_code == 200
    assert b'name="account_key"' not in page.content and b'name="is_active"' not in page.content
    page = admin_client.get(f"/admin/payments/merchant/{merchant.pk}/change/")
    assert page.status_code == 200 and b"wallets-0-is_active" not in page.content


# --- the migration's backfill ----------------------------------------------------------------------


def test_backfill_fingerprints_and_keeps_one_active_wallet_per_key(merchant, other):
    """Databases from before the constraint may hold the defect: two active wallets with one key. The one
    that derived addresses stays active."""
    held = merchant.wallets.get(chain="bitcoin")
    Wallet.objects.filter(pk=held.pk).update(next_index=40, key_fingerprint="", address_space="")
    duplicate = Wallet.objects.create(
        merchant=other,
        chain="bitcoin",
        network=held.network,
        account_key=spelled(BIP84_ZPUB, XPUB),
        key_fingerprint="pending",
        address_space="",
    )
    importlib.import_module("payments.migrations.0009_wallets_key_fingerprint").backfill(apps, None)
    held.refresh_from_db()
    duplicate.refresh_from_db()
    assert held.is_active and not duplicate.is_active
    assert held.key_fingerprint == duplicate.key_fingerprint == embit_fingerprint(BIP84_ZPUB)
    assert held.address_space == duplicate.address_space == "bc"
    assert merchant.wallets.get(chain="evm").address_space == "evm"

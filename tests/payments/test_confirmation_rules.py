"""Merchant confirmation rules, tiered by amount, end to end: set in the admin (as the README tells
operators) and by the service, honoured by intents created over the API and by the scanner on anvil.

Before the fix, any rule made every create a 500 (the claim decoded JSON that psycopg had decoded)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from devchain.anvil import token_transfer, token_units
from payments.accounts import confirmation_rule_set
from payments.chains.evm import EvmBackend
from payments.models import ConfirmationRule, NetworkAsset, PaymentIntent
from payments.scanning import network_scan

pytestmark = pytest.mark.django_db


def admin_form_data(response) -> dict[str, object]:
    """The POST body a browser would send for the rendered change form, inlines included."""
    data: dict[str, object] = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for field in form:
            value = field.value()
            if value is None or value is False:
                continue
            data[field.html_name] = "on" if value is True else value
    return data


def local(asset: str) -> NetworkAsset:
    return NetworkAsset.objects.get(asset__code=asset, network__code="evm-local")


def create(api, amount: str, asset: str = "ETH") -> dict:
    response = api.post(
        "/api/v1/payment-intents",
        {"amount": amount, "currency": asset, "asset": asset, "network": "evm-local"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_tiers_set_in_the_admin_apply_to_intents_created_over_the_api(admin_client, merchant, api):
    url = f"/admin/payments/merchant/{merchant.pk}/change/"
    data = admin_form_data(admin_client.get(url))
    prefix = "confirmation_rules"
    eth = local("ETH")
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": "2",
            f"{prefix}-0-network_asset": str(eth.pk),
            f"{prefix}-0-min_amount": "0",
            f"{prefix}-0-confirmations": "3",
            f"{prefix}-1-network_asset": str(eth.pk),
            f"{prefix}-1-min_amount": "100.5",  # asset units, as the form says
            f"{prefix}-1-confirmations": "7",
        }
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    tiers = sorted(
        ConfirmationRule.objects.filter(merchant=merchant).values_list(
            "min_amount_base_units", "confirmations"
        )
    )
    assert tiers == [(0, 3), (100_500_000_000_000_000_000, 7)]  # 100.5 ETH in wei (18 decimals)

    assert create(api, "10")["required_confirmations"] == 3
    assert create(api, "100.499999999999999999")["required_confirmations"] == 3
    assert create(api, "100.5")["required_confirmations"] == 7
    assert create(api, "5000")["required_confirmations"] == 7

    # the page shows the tier back in asset units, and an amount finer than the asset is refused
    page = admin_client.get(url)
    assert b'value="100.500000000000000000"' in page.content
    data = admin_form_data(page)
    data[f"{prefix}-1-min_amount"] = "0.0000000000000000001"
    refused = admin_client.post(url, data)
    assert refused.status_code == 200, refused.status_code
    assert b"ETH has 18 decimals" in refused.content, refused.context["errors"]


def test_a_rule_set_by_the_service_does_not_break_create(api, merchant):
    confirmation_rule_set(merchant=merchant, network_asset=local("ETH"), confirmations=4)
    assert create(api, "0.25")["required_confirmations"] == 4
    # the same asset on another network keeps its default
    response = api.post(
        "/api/v1/payment-intents",
        {"amount": "0.01", "currency": "ETH", "asset": "ETH", "network": "base"},
        format="json",
    )
    assert response.status_code == 201, response.content
    base = NetworkAsset.objects.get(asset__code="ETH", network__code="base")
    assert response.json()["required_confirmations"] == base.default_confirmations


@pytest.mark.parametrize(("confirmations", "min_amount"), [(0, 0), (-1, 0), (True, 0), (3, -1), ("3", 0)])
def test_the_service_refuses_nonsense_tiers(merchant, confirmations, min_amount):
    from payments.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        confirmation_rule_set(
            merchant=merchant,
            network_asset=local("ETH"),
            confirmations=confirmations,
            min_amount_base_units=min_amount,
        )
    assert not ConfirmationRule.objects.exists()


def test_the_scanner_honours_each_tier(local_usdc, merchant, api):
    node, token = local_usdc
    backend = EvmBackend("evm-local", node.url)
    usdc = local("USDC")
    confirmation_rule_set(merchant=merchant, network_asset=usdc, confirmations=3)
    confirmation_rule_set(
        merchant=merchant, network_asset=usdc, confirmations=5, min_amount_base_units=token_units("100")
    )
    small, large = create(api, "10", "USDC"), create(api, "200", "USDC")
    network_scan(backend=backend, now=timezone.now())
    token_transfer(node.w3, token, node.accounts[1], small["address"], token_units("10"))
    token_transfer(node.w3, token, node.accounts[1], large["address"], token_units("200"))

    def states() -> tuple[str, str]:
        network_scan(backend=backend, now=timezone.now())
        return (
            PaymentIntent.objects.get(pk=small["id"]).state,
            PaymentIntent.objects.get(pk=large["id"]).state,
        )

    # each transfer is in its own block; the large one's block is the tip (1 confirmation)
    assert states() == ("confirming", "confirming")
    node.mine(1)  # small: 3 confirmations, large: 2
    assert states() == ("paid", "confirming")
    node.mine(2)  # large: 4
    assert states() == ("paid", "confirming")
    node.mine(1)  # large: 5
    assert states() == ("paid", "paid")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"0-confirmations": "10001"}, b"less than or equal to 10000"),
        ({"0-confirmations": "0"}, b"greater than or equal to 1"),
        ({"0-min_amount": "1E+60"}, b"too large an amount"),
        ({"0-min_amount": "1.0"}, b"two tiers for"),  # 1 and 1.0 are one tier
    ],
)
def test_odd_tiers_are_form_errors_not_500s_or_lost_tiers(admin_client, merchant, changes, message):
    """Before: 10001 confirmations and 1E+60 answered 500; two rows for one tier were silently merged."""
    url = f"/admin/payments/merchant/{merchant.pk}/change/"
    data = admin_form_data(admin_client.get(url))
    prefix = "confirmation_rules"
    eth = str(local("ETH").pk)
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": "2",
            f"{prefix}-0-network_asset": eth,
            f"{prefix}-0-min_amount": "0",
            f"{prefix}-0-confirmations": "3",
            f"{prefix}-1-network_asset": eth,
            f"{prefix}-1-min_amount": "1",
            f"{prefix}-1-confirmations": "9",
        }
    )
    data.update({f"{prefix}-{k}": v for k, v in changes.items()})
    response = admin_client.post(url, data)
    assert response.status_code == 200 and message in response.content
    assert not ConfirmationRule.objects.exists()


def test_staff_who_may_only_view_see_the_tier_in_asset_units(client, merchant):
    from django.contrib.auth.models import Permission, User

    confirmation_rule_set(
        merchant=merchant, network_asset=local("ETH"), confirmations=7, min_amount_base_units=10**18 // 2
    )
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_merchant", "view_confirmationrule"])
    )
    from guardian.shortcuts import assign_perm

    from payments.admin_access import MERCHANT_ACCESS_PERMISSION

    assign_perm(MERCHANT_ACCESS_PERMISSION, viewer, merchant)
    client.force_login(viewer)
    page = client.get(f"/admin/payments/merchant/{merchant.pk}/change/")
    assert page.status_code == 200
    assert b"0.500000000000000000" in page.content


def test_tiers_changed_after_a_create_hold_for_the_next_create(api, merchant):
    """A create computes the confirmations from the tiers its process last read and its statement
    writes only if they are still the merchant's: a tier set or removed elsewhere (the admin, another
    web process) holds for the very next create, as when every create read them."""
    eth = local("ETH")
    assert create(api, "0.25")["required_confirmations"] == eth.default_confirmations  # read and kept
    ConfirmationRule.objects.create(merchant=merchant, network_asset=eth, confirmations=7)
    ConfirmationRule.objects.create(
        merchant=merchant, network_asset=eth, confirmations=9, min_amount_base_units=10**18
    )
    small, large = create(api, "0.25"), create(api, "2")
    assert (small["required_confirmations"], large["required_confirmations"]) == (7, 9)
    stored = PaymentIntent.objects.get(pk=large["id"])
    assert stored.required_confirmations == 9
    assert stored.transitions.get().verdict["required_confirmations"] == 9
    assert stored.events.order_by("sequence").last().payload["required_confirmations"] == 9
    ConfirmationRule.objects.filter(merchant=merchant, confirmations=7).delete()
    assert create(api, "0.25")["required_confirmations"] == eth.default_confirmations
    assert create(api, "2")["required_confirmations"] == 9

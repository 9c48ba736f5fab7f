"""Every admin change to configuration writes one audit entry (issue 12, item 9), through the real admin as a
superuser and as staff holding only a merchant admin's permissions: who, which object and merchant, the
changed fields before and after (worked out here by hand), the request id and client address, and never
a secret (a node URL's password, an API key, a webhook signing secret)."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.utils import timezone

from payments.models import ApiKey, ConfirmationRule, Network, NetworkAsset, WebhookEndpoint, WebhookSecret
from support.audit import audit_verify
from support.models import AuditEntry, MerchantPolicy
from tests.factories import account_key, make_merchant, make_staff
from tests.support.test_permission_matrix import _FormFields

pytestmark = pytest.mark.django_db

REQUEST = {"HTTP_X_REQUEST_ID": "req-7f3a", "REMOTE_ADDR": "192.0.2.44"}
REASON = "The merchant moved its funds to a new hardware wallet."


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_as_offered(client: Client, url: str) -> dict[str, list[str]]:
    """The values a browser would post from the page's form, unchanged."""
    page = client.get(url)
    assert page.status_code == 200
    fields = _FormFields()
    fields.feed(page.content.decode())
    data: dict[str, list[str]] = {}
    for key, value in fields.data:
        data.setdefault(key, []).append(value)
    data.pop("csrfmiddlewaretoken", None)
    data["_save"] = ["Save"]
    return data


def entries_since(sequence: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(sequence__gt=sequence).order_by("sequence"))


def head() -> int:
    last = AuditEntry.objects.order_by("-sequence").first()
    return last.sequence if last else 0


def whole_log() -> str:
    return json.dumps(list(AuditEntry.objects.values()), default=str)


def fields(entry: AuditEntry) -> tuple:
    return (
        entry.actor,
        entry.role,
        entry.action,
        entry.merchant_id,
        entry.object_type,
        entry.object_id,
        entry.before,
        entry.after,
        entry.request_id,
        entry.client_address,
    )


@pytest.fixture
def shop():
    return make_merchant("Shop")


@pytest.fixture
def merchant_admin(shop):
    """The merchant admin role's permissions on payments' models (support 0003), on this shop only."""
    return make_staff(
        "view_merchant",
        "change_merchant",
        "view_confirmationrule",
        "add_confirmationrule",
        "change_confirmationrule",
        "delete_confirmationrule",
        "view_apikey",
        "add_apikey",
        "change_apikey",
        "view_wallet",
        "add_wallet",
        "change_wallet",
        "view_webhookendpoint",
        "add_webhookendpoint",
        "change_webhookendpoint",
        merchants=[shop],
        username="mia",
    )


def test_a_node_url_is_recorded_redacted_and_a_new_password_still_shows(admin_client, admin_user):
    network = Network.objects.get(code="bitcoin")
    Network.objects.filter(pk=network.pk).update(rpc_url="http://127.0.0.1:9")
    url = f"/admin/payments/network/{network.pk}/change/"
    start = head()
    data = form_as_offered(admin_client, url)
    data["rpc_url"] = ["http://alice:first-S3cret@node.example:8332/wallet/shop"]
    assert admin_client.post(url, data, **REQUEST).status_code == 302
    data["rpc_url"] = ["http://alice:second-S3cret@node.example:8332/wallet/shop"]
    assert admin_client.post(url, data, **REQUEST).status_code == 302

    first, second = entries_since(start)
    redacted = "http://***@node.example:8332/…"
    common = ("admin", "superuser", "config.change", "", "payments.network", str(network.pk))
    assert fields(first) == (
        *common,
        {"rpc_url": "http://127.0.0.1:9"},
        {"rpc_url": redacted},
        "req-7f3a",
        "192.0.2.44",
    )
    # (a URL with no credentials and no path is shown whole)
    # Only the password changed: the redacted values are equal, and the change is still recorded.
    assert fields(second) == (*common, {"rpc_url": redacted}, {"rpc_url": redacted}, "req-7f3a", "192.0.2.44")
    assert "S3cret" not in whole_log() and "/wallet/shop" not in whole_log()
    # Saving again unchanged records nothing.
    data.pop("rpc_url")
    assert admin_client.post(url, data).status_code == 302
    assert len(entries_since(start)) == 2
    assert audit_verify().ok


def test_a_merchant_changed_with_a_confirmation_rule_added_in_its_inline(shop, merchant_admin):
    client = client_for(merchant_admin)
    url = f"/admin/payments/merchant/{quote(shop.pk)}/change/"
    data = form_as_offered(client, url)
    prefix = next(k for k in data if k.endswith("-TOTAL_FORMS") and "confirmation" in k)[
        : -len("-TOTAL_FORMS")
    ]
    btc = NetworkAsset.objects.get(network__code="bitcoin", asset__code="BTC")
    data[f"{prefix}-TOTAL_FORMS"] = ["1"]
    data |= {
        f"{prefix}-0-network_asset": [str(btc.pk)],
        f"{prefix}-0-min_amount": ["0.5"],
        f"{prefix}-0-confirmations": ["3"],
        f"{prefix}-0-merchant": [shop.pk],
    }
    assert data["expiry_minutes"] == ["15"]  # the default
    data["expiry_minutes"] = ["42"]
    start = head()
    response = client.post(url, data, **REQUEST)
    assert response.status_code == 302, response.content.decode()[-2000:]

    rule = ConfirmationRule.objects.get(merchant=shop)
    merchant_change, entry = entries_since(start)  # the merchant first, then its inline row
    assert fields(merchant_change) == (
        "mia",
        "",
        "config.change",
        shop.pk,
        "payments.merchant",
        shop.pk,
        {"expiry_minutes": 15},
        {"expiry_minutes": 42},
        "req-7f3a",
        "192.0.2.44",
    )
    assert fields(entry) == (
        "mia",
        "",  # made with make_staff: permissions, no role group
        "config.add",
        shop.pk,
        "payments.confirmationrule",
        str(rule.pk),
        None,
        # 0.5 BTC in satoshis; the tier's number as the database's NUMERIC gives it back, as a string
        {
            "id": rule.pk,
            "merchant": shop.pk,
            "network_asset": btc.pk,
            "min_amount_base_units": "50000000",
            "confirmations": 3,
        },
        "req-7f3a",
        "192.0.2.44",
    )
    assert audit_verify().ok


def test_an_api_key_added_and_revoked_never_records_the_key(shop, merchant_admin):
    client = client_for(merchant_admin)
    start = head()
    added = client.post(
        "/admin/payments/apikey/add/",
        {"merchant": shop.pk, "name": "till", "scopes": ["payments:read"]},
        **REQUEST,
    )
    assert added.status_code == 200
    secret = added.context["secret"]
    key = ApiKey.objects.get(merchant=shop, name="till")
    assert client.post(
        "/admin/payments/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, **REQUEST
    ).status_code in (200, 302)
    key.refresh_from_db()

    add, revoke = entries_since(start)
    common = ("mia", "", shop.pk, "payments.apikey", str(key.pk))
    assert (add.actor, add.role, add.merchant_id, add.object_type, add.object_id) == common
    assert (add.action, add.before) == ("config.add", None)
    assert add.after == {
        "id": key.pk,
        "merchant": shop.pk,
        "name": "till",
        "prefix": secret[:12],
        "scopes": ["payments:read"],
        "created_at": key.created_at.isoformat(),
        "last_used_at": None,
        "revoked_at": None,
    }
    assert (revoke.actor, revoke.role, revoke.merchant_id, revoke.object_type, revoke.object_id) == common
    assert (revoke.action, revoke.before, revoke.after) == (
        "config.revoke",
        {"revoked_at": None},
        {"revoked_at": key.revoked_at.isoformat()},
    )
    log = whole_log()
    assert secret not in log and key.digest not in log
    assert audit_verify().ok


def test_a_webhook_endpoint_added_and_disabled_never_records_its_secret(shop, merchant_admin):
    client = client_for(merchant_admin)
    start = head()
    added = client.post(
        "/admin/payments/webhookendpoint/add/",
        {"merchant": shop.pk, "url": "http://127.0.0.1:9/orders", "description": "shop"},
        **REQUEST,
    )
    assert added.status_code == 200
    [(endpoint, secret)] = added.context["shown"]
    endpoint = WebhookEndpoint.objects.get(pk=endpoint.pk)
    stored = WebhookSecret.objects.get(endpoint=endpoint)
    client.post(
        "/admin/payments/webhookendpoint/",
        {"action": "disable", "_selected_action": [endpoint.pk]},
        **REQUEST,
    )
    endpoint.refresh_from_db()

    add, disable = entries_since(start)
    assert (add.actor, add.action, add.merchant_id, add.object_type, add.object_id, add.before) == (
        "mia",
        "config.add",
        shop.pk,
        "payments.webhookendpoint",
        endpoint.pk,
        None,
    )
    assert add.after == {
        "id": endpoint.pk,
        "merchant": shop.pk,
        "url": "http://127.0.0.1:9/orders",
        "description": "shop",
        "event_types": [],
        "enabled": True,
        "disabled_reason": "",
        "disabled_at": None,
        "failing_since": None,
        "last_success_at": None,
        "created_at": endpoint.created_at.isoformat(),
        "deleted_at": None,
        "signing_secrets": [
            {"id": stored.pk, "created_at": stored.created_at.isoformat(), "expires_at": None}
        ],
    }
    assert (disable.action, disable.object_id, disable.request_id, disable.client_address) == (
        "config.disable",
        endpoint.pk,
        "req-7f3a",
        "192.0.2.44",
    )
    assert disable.before == {"enabled": True, "disabled_reason": "", "disabled_at": None}
    assert disable.after == {
        "enabled": False,
        "disabled_reason": "operator",
        "disabled_at": endpoint.disabled_at.isoformat(),
    }
    log = whole_log()
    assert secret not in log and stored.secret_encrypted not in log
    assert audit_verify().ok


def test_a_wallet_added_and_deactivated(shop, merchant_admin):
    """Adding is the dangerous action `wallet.add` (applied at once under this policy) and recorded as
    such; deactivating is a safe list action, recorded as a configuration change."""
    MerchantPolicy.objects.create(merchant=shop, config_four_eyes=False, updated_at=timezone.now())
    client = client_for(merchant_admin)
    bitcoin = Network.objects.get(code="bitcoin-regtest")
    tpub = account_key("m/84'/1'/5'", testnet=True)
    start = head()
    response = client.post(
        "/admin/payments/wallet/add/",
        {
            "merchant": shop.pk,
            "chain": "bitcoin",
            "network": bitcoin.pk,
            "account_key": tpub,
            "reason": REASON,
        },
        **REQUEST,
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    wallet = shop.wallets.get(network=bitcoin)
    client.post(
        "/admin/payments/wallet/", {"action": "deactivate", "_selected_action": [wallet.pk]}, **REQUEST
    )

    add, deactivate = entries_since(start)
    facts = {
        "wallet": wallet.pk,
        "chain": "bitcoin",
        "network": "bitcoin-regtest",
        "account_key": tpub,
        "key_fingerprint": wallet.key_fingerprint,
        "next_index": 0,
        "is_active": True,
    }
    assert fields(add) == (
        "mia",
        "",
        "wallet.add",
        shop.pk,
        "merchant",
        shop.pk,
        {"active_wallet": None},
        {
            "wallet": facts,
            "payload": {
                "chain": "bitcoin",
                "network": "bitcoin-regtest",
                "account_key": tpub,
                "replaces": None,
            },
        },
        "req-7f3a",
        "192.0.2.44",
    )
    assert add.reason == REASON
    assert fields(deactivate) == (
        "mia",
        "",
        "config.deactivate",
        shop.pk,
        "payments.wallet",
        str(wallet.pk),
        {"is_active": True},
        {"is_active": False},
        "req-7f3a",
        "192.0.2.44",
    )
    assert audit_verify().ok


def test_a_role_given_in_the_user_admin_is_recorded_without_the_password(admin_client, shop):
    from django.contrib.auth.models import Group, User

    carol = User.objects.create_user("carol", password="a long enough password 123", is_staff=True)
    # The form shows seconds: a time with microseconds would be recorded as changed (it is, by the form).
    User.objects.filter(pk=carol.pk).update(date_joined=carol.date_joined.replace(microsecond=0))
    group = Group.objects.get(name="merchant_admin")
    url = f"/admin/auth/user/{carol.pk}/change/"
    data = form_as_offered(admin_client, url)
    data["groups"] = [str(group.pk)]
    start = head()
    response = admin_client.post(url, data, **REQUEST)
    assert response.status_code == 302, response.content.decode()[-2000:]

    [entry] = entries_since(start)
    assert fields(entry) == (
        "admin",
        "superuser",
        "config.change",
        "",
        "auth.user",
        str(carol.pk),
        {"groups": []},
        {"groups": [group.pk]},
        "req-7f3a",
        "192.0.2.44",
    )
    carol.refresh_from_db()
    assert carol.password not in whole_log()
    assert audit_verify().ok


def test_events_sent_again_from_the_admin_are_audited_per_merchant(shop):
    from payments.models import Event, WebhookDelivery
    from payments.webhooks.delivery import events_dispatch
    from payments.webhooks.endpoints import endpoint_create
    from tests.payments.test_services_settle import new_intent

    now = timezone.now()
    hook, _ = endpoint_create(merchant=shop, url="http://127.0.0.1:9/hook", now=now)
    new_intent(shop)
    events_dispatch(now=now)
    event = Event.objects.filter(merchant=shop).order_by("position").first()
    lead = make_staff(
        "view_event", "change_webhookendpoint", "view_webhookdelivery", merchants=[shop], username="lee"
    )
    start = head()
    response = client_for(lead).post(
        "/admin/payments/event/", {"action": "redeliver", "_selected_action": [event.pk]}
    )
    assert response.status_code == 302
    made = list(WebhookDelivery.objects.filter(event=event, kind="replay").values_list("pk", flat=True))
    (entry,) = entries_since(start)
    assert (entry.actor, entry.action, entry.merchant_id, entry.object_type, entry.object_id) == (
        "lee",
        "webhook.redeliver",
        shop.pk,
        "payments.event",
        event.pk,
    )
    assert (
        entry.after == {"deliveries": made, "events": [event.pk], "endpoints": [hook.pk]} and len(made) == 1
    )

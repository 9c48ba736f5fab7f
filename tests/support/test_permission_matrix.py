"""The permission matrix: every role x every admin page and action that exists x {own merchant, other
merchant}, through the test client as real non-superuser staff made with `grant_role`. The expected
outcomes are written here from the role definitions (issue 12, docs/SUPPORT.md "Roles"), not read from
the migration's table. Allowed: the page answers and the action changes the database; refused: 403 or 404
and the database is as it was."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib import messages
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from payments.accounts import wallet_deactivate
from payments.models import (
    ApiKey,
    ConfirmationRule,
    Event,
    Merchant,
    Network,
    PaymentIntent,
    StateTransition,
    Wallet,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from payments.webhooks import endpoints
from payments.webhooks.delivery import events_dispatch
from support.models import ApprovalRequest
from tests.factories import account_key, make_api_key, make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db

ROLES = ("support_agent", "support_lead", "finance", "merchant_admin", "auditor")
SIDES = ("own", "other")
ADMIN = "/admin/payments"
HOOK_URL = "http://127.0.0.1:9/hook"
REASON = "The merchant asked for it in ticket 5150."


@dataclass
class Shop:
    merchant: Merchant
    intent: PaymentIntent
    endpoint: WebhookEndpoint  # enabled
    paused: WebhookEndpoint  # disabled by an operator
    event: Event
    delivery: WebhookDelivery
    api_key: ApiKey
    wallet: Wallet  # active
    inactive_wallet: Wallet  # may be reactivated
    transition: StateTransition | None


def shop(name: str, account: int) -> Shop:
    merchant = make_merchant(name, account=account)
    now = timezone.now()
    endpoint, _ = endpoints.endpoint_create(merchant=merchant, url=HOOK_URL, now=now)
    paused, _ = endpoints.endpoint_create(merchant=merchant, url=HOOK_URL + "/paused", now=now)
    endpoints.endpoint_disable(endpoint=paused, reason="operator", now=now)
    intent = new_intent(merchant)
    events_dispatch(now=now)
    event = Event.objects.filter(merchant=merchant).order_by("position").first()
    inactive = wallet_deactivate(wallet=merchant.wallets.get(chain="litecoin"))
    return Shop(
        merchant=merchant,
        intent=intent,
        endpoint=endpoint,
        paused=paused,
        event=event,
        delivery=WebhookDelivery.objects.get(event=event, endpoint=endpoint),
        api_key=make_api_key(merchant)[0],
        wallet=merchant.wallets.get(chain="evm"),
        inactive_wallet=inactive,
        transition=intent.transitions.first(),
    )


@pytest.fixture
def shops() -> dict[str, Shop]:
    return {"own": shop("Own shop", 0), "other": shop("Other shop", 1)}


def staff(role: str, own: Merchant, monkeypatch) -> Client:
    monkeypatch.setenv("GATEWAY_STAFF_PASSWORD", "a long enough password 123")
    call_command("grant_role", f"{role}-user", role, "--merchant", own.pk, "--create")
    user = User.objects.get(username=f"{role}-user")
    assert user.is_staff and not user.is_superuser
    client = Client()
    client.force_login(user)
    return client


def db_state() -> list:
    """Every column of every row an admin page or action here could change."""
    models = (
        Merchant,
        ConfirmationRule,
        Wallet,
        ApiKey,
        WebhookEndpoint,
        WebhookSecret,
        WebhookDelivery,
        Event,
    )
    # A wallet key or a reactivation asked for (four-eyes by default) is an approval request.
    return [list(model.objects.order_by("pk").values()) for model in (*models, ApprovalRequest)]


# --- Pages: every role views every payments page, of its own merchant only. ---------------------------

PAGES: dict[str, Callable[[Shop], object]] = {
    "merchant": lambda s: s.merchant,
    "paymentintent": lambda s: s.intent,
    "wallet": lambda s: s.wallet,
    "apikey": lambda s: s.api_key,
    "webhookendpoint": lambda s: s.endpoint,
    "event": lambda s: s.event,
    "webhookdelivery": lambda s: s.delivery,
    "statetransition": lambda s: s.transition,
}
VIEWERS = set(ROLES)  # "view on payments' models for all"


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_pages_show_the_granted_merchant_only(shops, role, side, monkeypatch):
    client = staff(role, shops["own"].merchant, monkeypatch)
    target = shops[side]
    allowed = role in VIEWERS and side == "own"
    assert target.transition is not None
    before = db_state()
    wrong = []
    for model, pick in PAGES.items():
        obj = pick(target)
        change_url = f"{ADMIN}/{model}/{quote(obj.pk)}/change/"
        listing = client.get(f"{ADMIN}/{model}/")
        if listing.status_code != 200:
            wrong.append((model, "changelist", listing.status_code))
            continue
        if (change_url.encode() in listing.content) != allowed:
            wrong.append((model, "row listed", not allowed))
        if b"Other shop" in listing.content:
            wrong.append((model, "the other merchant is named (row or list filter)"))
        for kind in ("change", "history"):
            page = client.get(change_url.replace("/change/", f"/{kind}/"))
            if (page.status_code == 200) != allowed or page.status_code not in (200, 403, 404):
                wrong.append((model, f"{kind} page", page.status_code))
    assert not wrong, wrong
    assert db_state() == before


# --- Actions and add forms: who may act, on which merchant. ---------------------------------------------

ENDPOINT_ACTORS = {"support_lead", "merchant_admin"}  # "support_lead and merchant_admin change endpoints"
MERCHANT_ADMIN = {"merchant_admin"}  # "manages API keys, wallets, confirmation rules and merchant policy"


@dataclass(frozen=True)
class Act:
    url: str
    data: Callable[[Shop], dict]
    actors: set[str]  # the roles allowed to do it on their own merchant
    action: str = ""
    selected: Callable[[Shop], object] = field(default=lambda s: None)


def replay_range(s: Shop) -> dict:
    fmt = "%Y-%m-%d %H:%M:%S"
    since, until = timezone.localtime() - timedelta(hours=1), timezone.localtime() + timedelta(minutes=1)
    return {"apply": "1", "since": since.strftime(fmt), "until": until.strftime(fmt)}


def action(changelist: str, name: str, selected, actors, data=lambda s: {}) -> Act:
    return Act(f"{ADMIN}/{changelist}/", data, actors, name, selected)


ACTS = {
    "endpoint enable": action("webhookendpoint", "enable", lambda s: s.paused, ENDPOINT_ACTORS),
    "endpoint disable": action("webhookendpoint", "disable", lambda s: s.endpoint, ENDPOINT_ACTORS),
    "endpoint rotate secret": action(
        "webhookendpoint", "rotate_secret", lambda s: s.endpoint, ENDPOINT_ACTORS
    ),
    "endpoint replay range": action(
        "webhookendpoint", "replay_range", lambda s: s.endpoint, ENDPOINT_ACTORS, replay_range
    ),
    "event redeliver": action("event", "redeliver", lambda s: s.event, ENDPOINT_ACTORS),
    "delivery redeliver": action("webhookdelivery", "redeliver", lambda s: s.delivery, ENDPOINT_ACTORS),
    "api key revoke": action("apikey", "revoke", lambda s: s.api_key, MERCHANT_ADMIN),
    "wallet deactivate": action("wallet", "deactivate", lambda s: s.wallet, MERCHANT_ADMIN),
    "wallet reactivate": action(
        "wallet",
        "reactivate",
        lambda s: s.inactive_wallet,
        MERCHANT_ADMIN,
        lambda s: {"apply": "1", "reason": REASON},
    ),
    "add api key": Act(
        f"{ADMIN}/apikey/add/",
        lambda s: {"merchant": s.merchant.pk, "name": "till", "scopes": ["payments:read"]},
        MERCHANT_ADMIN,
    ),
    "add wallet": Act(
        f"{ADMIN}/wallet/add/",
        lambda s: {
            "merchant": s.merchant.pk,
            "chain": "litecoin",
            "network": Network.objects.get(code="litecoin-regtest").pk,
            "account_key": account_key("m/84'/1'/9'", testnet=True),
            "replace": "on",
            "reason": REASON,
        },
        MERCHANT_ADMIN,
    ),
    "add webhook endpoint": Act(
        f"{ADMIN}/webhookendpoint/add/",
        lambda s: {"merchant": s.merchant.pk, "url": HOOK_URL + "/new", "description": "new"},
        MERCHANT_ADMIN,
    ),
}


class _FormFields(HTMLParser):
    """The values a browser would post from the page's main form (inputs, selects, textareas)."""

    def __init__(self):
        super().__init__()
        self.data: list[tuple[str, str]] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.append((a["name"], a.get("value") or ("on" if a.get("type") == "checkbox" else "")))
        elif tag == "select" and a.get("name"):
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self.data.append((self._select, a.get("value", "")))
        elif tag == "textarea" and a.get("name"):
            self._textarea = a["name"]
            self.data.append((a["name"], ""))

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[-1] = (self._textarea, data.lstrip("\n"))


def merchant_policy_change(client: Client, merchant: Merchant) -> tuple[str, dict]:
    """The merchant's change form as the page offers it (as a superuser sees it), with a new policy."""
    page = client.get(f"{ADMIN}/merchant/{quote(merchant.pk)}/change/")
    assert page.status_code == 200
    fields = _FormFields()
    fields.feed(page.content.decode())
    data: dict[str, list[str]] = {}
    for key, value in fields.data:
        data.setdefault(key, []).append(value)
    data.pop("csrfmiddlewaretoken", None)
    data["expiry_minutes"] = ["42"]
    return f"{ADMIN}/merchant/{quote(merchant.pk)}/change/", data


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_only_a_merchant_admin_changes_its_own_merchants_policy(shops, role, side, admin_client, monkeypatch):
    url, data = merchant_policy_change(admin_client, shops[side].merchant)
    client = staff(role, shops["own"].merchant, monkeypatch)
    allowed = role in MERCHANT_ADMIN and side == "own"
    before = db_state()

    response = client.post(url, data)

    if allowed:
        assert response.status_code == 302, response.content.decode()[-3000:]
        assert Merchant.objects.get(pk=shops[side].merchant.pk).expiry_minutes == 42
    else:
        assert response.status_code in (403, 404), response.status_code
        assert db_state() == before, "a refused change changes nothing"


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(ACTS))
def test_role_may_act_on_its_own_merchant_only(shops, name, role, side, monkeypatch):
    act = ACTS[name]
    client = staff(role, shops["own"].merchant, monkeypatch)
    target = shops[side]
    data = act.data(target)
    if act.action:
        data |= {"action": act.action, "_selected_action": [act.selected(target).pk]}
    allowed = role in act.actors and side == "own"
    before = db_state()

    response = client.post(act.url, data)

    if allowed:
        assert response.status_code in (200, 302), response.status_code
        assert b'class="errorlist' not in response.content, "no form error"
        assert not [m for m in get_messages(response.wsgi_request) if m.level >= messages.ERROR]
        assert db_state() != before, "the action did its work"
    else:
        assert response.status_code in (403, 404), response.status_code
        assert db_state() == before, "a refused action changes nothing"

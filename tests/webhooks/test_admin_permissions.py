"""Who may run the webhook admin's actions: every action x {staff without permissions, view only, change}
through the test client as a real staff user (never a superuser) holding exactly those permissions. A
refused user gets a 403, sees no action it cannot run, and the database is left as it was (the signing
secret above all)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.utils import timezone

from payments.models import Event, WebhookDelivery, WebhookEndpoint, WebhookSecret
from payments.webhooks import endpoints
from payments.webhooks.admin import WebhookEndpointAdmin
from payments.webhooks.delivery import events_dispatch
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/payments/webhookendpoint/"
DELIVERIES = "/admin/payments/webhookdelivery/"
EVENTS = "/admin/payments/event/"
VIEW_ALL_WEBHOOKS = ("view_webhookendpoint", "view_webhookdelivery", "view_event")


@dataclass
class World:
    endpoint: WebhookEndpoint  # enabled, every event type
    paused: WebhookEndpoint  # disabled by an operator
    event: Event
    delivery: WebhookDelivery  # the event's original delivery to `endpoint`


@pytest.fixture
def world(receiver) -> World:
    merchant = make_merchant()
    now = timezone.now()
    endpoint, _ = endpoints.endpoint_create(merchant=merchant, url=receiver.url, now=now)
    paused, _ = endpoints.endpoint_create(merchant=merchant, url=receiver.url + "paused", now=now)
    endpoints.endpoint_disable(endpoint=paused, reason="operator", now=now)
    new_intent(merchant)
    events_dispatch(now=now)
    event = Event.objects.order_by("position").first()
    return World(endpoint, paused, event, WebhookDelivery.objects.get(event=event, endpoint=endpoint))


def staff_client(codenames: tuple[str, ...]) -> tuple[Client, User]:
    user = make_staff(*codenames)
    client = Client()
    client.force_login(user)
    return client, user


def db_state() -> list:
    """Every column of every webhook row: what a refused action must leave as it was."""
    return [
        list(model.objects.order_by("pk").values())
        for model in (WebhookEndpoint, WebhookSecret, WebhookDelivery)
    ]


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def rotated(world: World, response) -> None:
    assert world.endpoint.secrets.count() == 2
    new = world.endpoint.secrets.order_by("-created_at").first().secret
    assert new.encode() in response.content, "the new secret is shown to who may rotate, on its page"
    assert "no-store" in response["Cache-Control"]
    assert not any("whsec_" in m for m in messages_of(response)), "never kept in a message"


def enabled(world: World, response) -> None:
    world.paused.refresh_from_db()
    assert world.paused.enabled and world.paused.disabled_reason == ""


def disabled(world: World, response) -> None:
    world.endpoint.refresh_from_db()
    assert not world.endpoint.enabled and world.endpoint.disabled_reason == "operator"


def replay_form_shown(world: World, response) -> None:
    assert response.status_code == 200 and b"Replay events to 1 endpoint" in response.content


def replay_queued(world: World, response) -> None:
    assert response.status_code == 302
    assert WebhookDelivery.objects.filter(kind="replay", endpoint=world.endpoint, event=world.event).exists()


def redelivered(world: World, response) -> None:
    replay = WebhookDelivery.objects.get(kind="replay")
    assert (replay.event, replay.endpoint) == (world.event, world.endpoint)


def replay_range_data(world: World) -> dict:
    since = timezone.localtime() - timedelta(hours=1)
    until = timezone.localtime() + timedelta(minutes=1)
    fmt = "%Y-%m-%d %H:%M:%S"
    return {"apply": "1", "since": since.strftime(fmt), "until": until.strftime(fmt)}


@dataclass(frozen=True)
class Case:
    changelist: str
    action: str
    selected: Callable[[World], str]
    view_only: tuple[str, ...]  # permissions of a user who may look but not act
    change: tuple[str, ...]  # permissions of a user who may act
    worked: Callable[[World, object], None]
    data: Callable[[World], dict] = field(default=lambda world: {})


ENDPOINT_VIEW, ENDPOINT_CHANGE = ("view_webhookendpoint",), ("change_webhookendpoint",)
CASES = {
    "endpoint enable": Case(
        ENDPOINTS, "enable", lambda w: w.paused.pk, ENDPOINT_VIEW, ENDPOINT_CHANGE, enabled
    ),
    "endpoint disable": Case(
        ENDPOINTS, "disable", lambda w: w.endpoint.pk, ENDPOINT_VIEW, ENDPOINT_CHANGE, disabled
    ),
    "endpoint rotate secret": Case(
        ENDPOINTS, "rotate_secret", lambda w: w.endpoint.pk, ENDPOINT_VIEW, ENDPOINT_CHANGE, rotated
    ),
    "endpoint replay form": Case(
        ENDPOINTS, "replay_range", lambda w: w.endpoint.pk, ENDPOINT_VIEW, ENDPOINT_CHANGE, replay_form_shown
    ),
    "endpoint replay apply": Case(
        ENDPOINTS,
        "replay_range",
        lambda w: w.endpoint.pk,
        ENDPOINT_VIEW,
        ENDPOINT_CHANGE,
        replay_queued,
        replay_range_data,
    ),
    "delivery redeliver": Case(
        DELIVERIES,
        "redeliver",
        lambda w: w.delivery.pk,
        VIEW_ALL_WEBHOOKS,
        VIEW_ALL_WEBHOOKS + ENDPOINT_CHANGE,
        redelivered,
    ),
    "event redeliver": Case(
        EVENTS,
        "redeliver",
        lambda w: w.event.pk,
        VIEW_ALL_WEBHOOKS,
        VIEW_ALL_WEBHOOKS + ENDPOINT_CHANGE,
        redelivered,
    ),
}


@pytest.mark.parametrize("level", ["none", "view only", "change"])
@pytest.mark.parametrize("name", list(CASES))
def test_admin_action_needs_the_change_permission(world, name, level):
    case = CASES[name]
    client, _ = staff_client({"none": (), "view only": case.view_only, "change": case.change}[level])
    before = db_state()
    listing = client.get(case.changelist)
    response = client.post(
        case.changelist,
        {"action": case.action, "_selected_action": [case.selected(world)], **case.data(world)},
    )
    if level == "change":
        assert listing.status_code == 200 and f'value="{case.action}"'.encode() in listing.content
        case.worked(world, response)
        return
    if level == "none":
        assert listing.status_code == 403
    else:
        assert listing.status_code == 200, "view-only staff still see the list"
        assert f'value="{case.action}"'.encode() not in listing.content, "no action it cannot run"
    assert response.status_code == 403
    assert b"whsec_" not in response.content and not any("whsec_" in m for m in messages_of(response))
    assert db_state() == before, "a refused action changes nothing"


def test_a_selection_with_one_endpoint_out_of_reach_is_refused_whole(world, receiver):
    """Actions check every selected object through `has_action_permission(request, obj)`, the one place
    where roles will add the object's merchant: an admin that refuses one merchant's endpoints refuses a
    selection holding one of them, before anything changes."""
    other = make_merchant("Other shop", account=1, wallets=False)
    foreign, _ = endpoints.endpoint_create(merchant=other, url=receiver.url, now=timezone.now())

    class OneMerchantOnly(WebhookEndpointAdmin):
        def has_action_permission(self, request, obj=None):
            return super().has_action_permission(request, obj) and (
                obj is None or obj.merchant_id == world.endpoint.merchant_id
            )

    model_admin = OneMerchantOnly(WebhookEndpoint, admin.site)
    request = RequestFactory().post(ENDPOINTS)
    request.user = staff_client(ENDPOINT_CHANGE)[1]
    before = db_state()
    selection = WebhookEndpoint.objects.filter(pk__in=[world.endpoint.pk, foreign.pk])
    for action in ("enable", "disable", "rotate_secret", "replay_range"):
        with pytest.raises(PermissionDenied):
            getattr(model_admin, action)(request, selection)
    assert db_state() == before


def test_view_only_staff_get_no_save_or_delete_buttons(world):
    client, _ = staff_client(VIEW_ALL_WEBHOOKS)
    pages = (
        f"{ENDPOINTS}{world.endpoint.pk}/change/",
        f"{DELIVERIES}{world.delivery.pk}/change/",
        f"{EVENTS}{world.event.pk}/change/",
    )
    for url in pages:
        page = client.get(url)
        assert page.status_code == 200, url
        assert b'name="_save"' not in page.content and b"deletelink" not in page.content, url
    before = db_state()
    response = client.post(pages[0], {"url": "https://example.com/other", "description": "changed"})
    assert response.status_code == 403 and db_state() == before


def test_endpoint_editors_may_save_but_never_delete(world):
    client, _ = staff_client(("view_webhookendpoint", "change_webhookendpoint", "delete_webhookendpoint"))
    page = client.get(f"{ENDPOINTS}{world.endpoint.pk}/change/")
    assert b'name="_save"' in page.content and b"deletelink" not in page.content
    assert client.get(f"{ENDPOINTS}{world.endpoint.pk}/delete/").status_code == 403


def test_evidence_is_never_added_changed_or_deleted_in_the_admin(world):
    """Events and the delivery log are append-only: even staff holding every model permission on them
    get no add, save or delete."""
    codenames = [
        f"{verb}_{model}"
        for verb in ("add", "change", "delete", "view")
        for model in ("event", "webhookdelivery")
    ]
    client, _ = staff_client(tuple(codenames))
    for changelist, pk in ((EVENTS, world.event.pk), (DELIVERIES, world.delivery.pk)):
        listing = client.get(changelist)
        assert listing.status_code == 200 and b"addlink" not in listing.content
        assert b'value="delete_selected"' not in listing.content
        page = client.get(f"{changelist}{pk}/change/")
        assert b'name="_save"' not in page.content and b"deletelink" not in page.content
        assert client.get(f"{changelist}add/").status_code == 403
        assert client.get(f"{changelist}{pk}/delete/").status_code == 403

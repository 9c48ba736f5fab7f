"""The webhook admin: add with the secret shown once, the SSRF check on the form, health flags, the
delivery log per event and per endpoint, redelivery and replay of a time range."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from payments.models import Event, WebhookDelivery, WebhookEndpoint
from payments.webhooks import endpoints
from payments.webhooks.delivery import deliver_due
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_adding_an_endpoint_shows_its_secret_once(admin_client, receiver):
    merchant = make_merchant()
    response = admin_client.post(
        "/admin/payments/webhookendpoint/add/",
        {
            "merchant": merchant.pk,
            "url": receiver.url,
            "description": "shop",
            "event_types": ["payment.paid"],
        },
    )
    assert response.status_code == 200, response.content[-3000:]
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["payment.paid"]
    secret = endpoint.secrets.get().secret
    # shown on the answer itself, never cached, never kept in a message (cookie or session) for later
    assert secret.encode() in response.content and "no-store" in response["Cache-Control"]
    assert not any("whsec_" in m for m in texts(response))
    for page in (
        "/admin/payments/webhookendpoint/",
        f"/admin/payments/webhookendpoint/{endpoint.pk}/change/",
    ):
        assert secret.encode() not in admin_client.get(page).content, "shown once"


def test_a_private_url_is_refused_on_the_form(admin_client, settings):
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = []
    merchant = make_merchant()
    response = admin_client.post(
        "/admin/payments/webhookendpoint/add/", {"merchant": merchant.pk, "url": "http://10.0.0.8/x"}
    )
    assert response.status_code == 200
    assert b"private or reserved address" in response.content
    assert not WebhookEndpoint.objects.exists()


def test_health_flag_delivery_log_and_redelivery(admin_client, receiver, settings):
    settings.GATEWAY_WEBHOOK_DISABLE_AFTER_HOURS = 1
    merchant = make_merchant()
    endpoint, _ = endpoints.endpoint_create(merchant=merchant, url=receiver.url, now=timezone.now())
    new_intent(merchant)
    receiver.default_status = 500
    t = timezone.now()
    deliver_due(now=t)
    listing = admin_client.get("/admin/payments/webhookendpoint/?health=failing")
    assert b"failing since" in listing.content and endpoint.pk.encode() in listing.content
    deliver_due(now=t + timedelta(hours=2))
    listing = admin_client.get("/admin/payments/webhookendpoint/?health=disabled")
    assert b"disabled: failing for too long" in listing.content
    delivery = WebhookDelivery.objects.order_by("id").first()
    page = admin_client.get(f"/admin/payments/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200 and b"receiver says no" in page.content and b"HTTP 500" in page.content
    event = Event.objects.get(type="payment.created")
    assert admin_client.get(f"/admin/payments/event/{event.pk}/change/").status_code == 200
    assert (
        admin_client.get(f"/admin/payments/webhookdelivery/?endpoint__id__exact={endpoint.pk}").status_code
        == 200
    )
    # enable again, then redeliver the event from its admin page
    changelist = "/admin/payments/webhookendpoint/"
    admin_client.post(changelist, {"action": "enable", "_selected_action": [endpoint.pk]})
    receiver.default_status = 200
    response = admin_client.post(
        "/admin/payments/event/", {"action": "redeliver", "_selected_action": [event.pk]}
    )
    assert any("queued for 1 endpoints" in m for m in texts(response))
    deliver_due(now=t + timedelta(hours=3))
    replay = WebhookDelivery.objects.get(kind="replay")
    assert replay.state == "delivered" and replay.requested_by == "admin:admin"


def test_rotate_and_replay_a_time_range_from_the_admin(admin_client, receiver):
    merchant = make_merchant()
    endpoint, _ = endpoints.endpoint_create(
        merchant=merchant, url=receiver.url, event_types=["payment.created"], now=timezone.now()
    )
    for _ in range(3):
        new_intent(merchant)
    deliver_due(now=timezone.now())
    changelist = "/admin/payments/webhookendpoint/"
    response = admin_client.post(changelist, {"action": "rotate_secret", "_selected_action": [endpoint.pk]})
    assert endpoint.secrets.count() == 2
    newest = endpoint.secrets.order_by("-created_at").first().secret
    assert newest.encode() in response.content and not any("whsec_" in m for m in texts(response))
    form = admin_client.post(changelist, {"action": "replay_range", "_selected_action": [endpoint.pk]})
    assert form.status_code == 200 and b"Replay events to 1 endpoint" in form.content
    since = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    until = (timezone.localtime() + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    response = admin_client.post(
        changelist,
        {
            "action": "replay_range",
            "apply": "1",
            "_selected_action": [endpoint.pk],
            "since": since,
            "until": until,
        },
    )
    assert response.status_code == 302
    assert any("3 events queued again" in m for m in texts(response))
    deliver_due(now=timezone.now())
    assert len(receiver.received) == 6

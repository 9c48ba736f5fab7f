"""The delivery log is bounded: finished deliveries and their attempts go after GATEWAY_WEBHOOK_LOG_DAYS;
pending and paused ones, and the events, stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from payments.models import Event, WebhookAttempt, WebhookDelivery
from payments.tasks import purge_webhook_log
from payments.webhooks import endpoints
from payments.webhooks.delivery import deliver_due
from payments.webhooks.retention import webhook_log_purge
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivered(receiver):
    """Six events of three intents delivered to one endpoint, an attempt each."""
    merchant = make_merchant()
    endpoints.endpoint_create(merchant=merchant, url=receiver.url, event_types=(), now=timezone.now())
    for _ in range(3):
        new_intent(merchant)
    assert deliver_due(now=timezone.now()) == 6
    return merchant


def age(days: float, *ids: int) -> None:
    WebhookDelivery.objects.filter(id__in=ids).update(created_at=timezone.now() - timedelta(days=days))


def test_finished_deliveries_older_than_the_window_go_with_their_attempts(delivered, settings):
    deliveries = list(WebhookDelivery.objects.order_by("id").values_list("id", flat=True))
    old, recent = deliveries[:4], deliveries[4:]
    age(91, *old)
    WebhookDelivery.objects.filter(id=old[0]).update(state="failed")
    pending = WebhookDelivery.objects.create(
        event=Event.objects.first(),
        endpoint_id=WebhookDelivery.objects.get(id=old[1]).endpoint_id,
        kind="replay",
        state="pending",
        created_at=timezone.now() - timedelta(days=200),
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    events = Event.objects.count()

    assert webhook_log_purge(now=timezone.now(), keep=timedelta(days=90), batch=3) == 4  # two batches

    assert set(WebhookDelivery.objects.values_list("id", flat=True)) == {*recent, pending.id}
    assert set(WebhookAttempt.objects.values_list("delivery_id", flat=True)) == set(recent)
    assert Event.objects.count() == events  # the merchant's feed is kept
    assert webhook_log_purge(now=timezone.now(), keep=timedelta(days=90)) == 0  # nothing left to do


def test_the_task_reads_the_setting_and_zero_keeps_everything(delivered, settings):
    age(40, *WebhookDelivery.objects.values_list("id", flat=True))
    settings.GATEWAY_WEBHOOK_LOG_DAYS = 0
    assert purge_webhook_log() == 0 and WebhookDelivery.objects.count() == 6
    settings.GATEWAY_WEBHOOK_LOG_DAYS = 30
    assert purge_webhook_log() == 6
    assert not WebhookDelivery.objects.exists() and not WebhookAttempt.objects.exists()

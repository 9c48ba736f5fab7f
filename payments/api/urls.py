from django.urls import path

from . import refund_views, views, webhook_views

urlpatterns = [
    path("payment-intents", views.PaymentIntentListCreateView.as_view(), name="intent-list"),
    path(
        "payment-intents/<public_id:intent_id>", views.PaymentIntentDetailView.as_view(), name="intent-detail"
    ),
    path(
        "payment-intents/<public_id:intent_id>/cancel",
        views.PaymentIntentCancelView.as_view(),
        name="intent-cancel",
    ),
    path(
        "payment-intents/<public_id:intent_id>/fulfilment",
        views.PaymentIntentFulfilmentView.as_view(),
        name="intent-fulfilment",
    ),
    path(
        "payment-intents/<public_id:intent_id>/select-asset",
        views.PaymentIntentSelectAssetView.as_view(),
        name="intent-select-asset",
    ),
    path("webhook-endpoints", webhook_views.WebhookEndpointListView.as_view(), name="endpoint-list"),
    path(
        "webhook-endpoints/<public_id:endpoint_id>",
        webhook_views.WebhookEndpointDetailView.as_view(),
        name="endpoint-detail",
    ),
    path(
        "webhook-endpoints/<public_id:endpoint_id>/rotate-secret",
        webhook_views.WebhookEndpointRotateView.as_view(),
        name="endpoint-rotate-secret",
    ),
    path(
        "webhook-endpoints/<public_id:endpoint_id>/replay",
        webhook_views.WebhookEndpointReplayView.as_view(),
        name="endpoint-replay",
    ),
    path(
        "webhook-endpoints/<public_id:endpoint_id>/deliveries",
        webhook_views.WebhookEndpointDeliveriesView.as_view(),
        name="endpoint-deliveries",
    ),
    path("refunds", refund_views.RefundListCreateView.as_view(), name="refund-list"),
    path("refunds/<public_id:refund_id>", refund_views.RefundDetailView.as_view(), name="refund-detail"),
    path(
        "refunds/<public_id:refund_id>/cancel", refund_views.RefundCancelView.as_view(), name="refund-cancel"
    ),
    path("refunds/<public_id:refund_id>/qr.svg", refund_views.RefundQrView.as_view(), name="refund-qr"),
    path("settlements", refund_views.SettlementListView.as_view(), name="settlement-list"),
    path(
        "settlements/<public_id:settlement_id>",
        refund_views.SettlementDetailView.as_view(),
        name="settlement-detail",
    ),
    path("events", webhook_views.EventListView.as_view(), name="event-list"),
    path("events/<public_id:event_id>", webhook_views.EventDetailView.as_view(), name="event-detail"),
    path(
        "events/<public_id:event_id>/deliveries",
        webhook_views.EventDeliveriesView.as_view(),
        name="event-deliveries",
    ),
    path(
        "events/<public_id:event_id>/redeliver",
        webhook_views.EventRedeliverView.as_view(),
        name="event-redeliver",
    ),
]

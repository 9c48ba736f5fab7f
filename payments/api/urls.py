from django.urls import path

from . import views

urlpatterns = [
    path("payment-intents", views.PaymentIntentListCreateView.as_view(), name="intent-list"),
    path("payment-intents/<str:intent_id>", views.PaymentIntentDetailView.as_view(), name="intent-detail"),
    path(
        "payment-intents/<str:intent_id>/cancel",
        views.PaymentIntentCancelView.as_view(),
        name="intent-cancel",
    ),
    path(
        "payment-intents/<str:intent_id>/select-asset",
        views.PaymentIntentSelectAssetView.as_view(),
        name="intent-select-asset",
    ),
]

from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from gateway import health, metrics
from payments import checkout, refund_page
from payments.api.edge import PublicIdConverter

register_converter(PublicIdConverter, "public_id")
handler400 = "payments.api.edge.bad_request"
handler404 = "payments.api.edge.not_found"
handler500 = "payments.api.edge.server_error"


urlpatterns = [
    path("pay/<public_id:token>", checkout.page, name="checkout-page"),
    path("pay/<public_id:token>/select", checkout.select, name="checkout-select"),
    path("pay/<public_id:token>/status", checkout.status_json, name="checkout-status"),
    path("pay/<public_id:token>/qr.svg", checkout.qr_svg, name="checkout-qr"),
    path("refund/<str:token>", refund_page.page, name="refund-page"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("payments.api.urls")),
    path("api/v1/", include("reconciliation.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("healthz", health.healthz, name="health"),
    path("readyz", health.readyz, name="ready"),
    path("metrics", metrics.metrics_view, name="metrics"),
]

from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from payments import checkout


def health(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("pay/<str:token>", checkout.page, name="checkout-page"),
    path("pay/<str:token>/select", checkout.select, name="checkout-select"),
    path("pay/<str:token>/status", checkout.status_json, name="checkout-status"),
    path("pay/<str:token>/qr.svg", checkout.qr_svg, name="checkout-qr"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("payments.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("healthz", health, name="health"),
]

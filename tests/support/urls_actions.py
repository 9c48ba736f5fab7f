"""The project's URLs plus the console's payment-action route, for tests of actions before the payment
page wires the dispatcher in (the route has the shape the payment page will give it)."""

from django.contrib import admin
from django.urls import path

from gateway.urls import urlpatterns as project_urlpatterns
from support.console import payment_action_dispatch


def dispatch(request, intent_id: str, name: str):
    return payment_action_dispatch(request, intent_id, name, admin.site.each_context(request))


urlpatterns = [
    path(
        "console/payments/<str:intent_id>/action/<str:name>/",
        admin.site.admin_view(dispatch),
        name="test_payment_action",
    ),
    *project_urlpatterns,
]

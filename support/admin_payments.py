"""The payment page: payments' read-only `PaymentIntentAdmin` (its list, filters and merchant scope kept)
with the change page replaced by the whole story of one payment (support.payment_page), a "check now"
panel that re-evaluates the evidence without writing, and the console's actions (support.console) offered
as links to `<payment>/action/<name>/`. It lives in `support` because payments never imports support."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from payments.admin import PaymentIntentAdmin
from payments.models import Event, Merchant, PaymentIntent
from payments.selectors import INTENT_RELATED

from . import console
from .models import AuditEntry, SupportCase
from .payment_page import payment_page


class SupportPaymentIntentAdmin(PaymentIntentAdmin):
    """Evidence is read-only: no add, change or delete here (the page has no Save or Delete), and a POST
    to the page is refused; decisions are the console's actions, each behind its own permission."""

    page_template = "admin/payments/paymentintent/payment_page.html"
    inlines = []  # the page shows observations and transitions itself, in the asset's units

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("merchant", *INTENT_RELATED)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_action"
        action = path(
            "<path:object_id>/action/<str:name>/", self.admin_site.admin_view(self.action_view), name=name
        )
        return [action, *super().get_urls()]

    def action_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        """One of the console's actions on this payment: the dispatcher checks scope and permission."""
        context = {**self.admin_site.each_context(request), "opts": self.opts}
        return console.payment_action_dispatch(request, unquote(object_id), name, context)

    def _may_view(self, request: HttpRequest, model) -> bool:
        model_admin = self.admin_site._registry.get(model)
        return model_admin is not None and model_admin.has_view_permission(request)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method != "GET":
            raise PermissionDenied  # nothing on this page is posted; actions have their own URLs
        intent = self.get_object(request, unquote(object_id))
        if intent is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, intent):
            raise PermissionDenied
        # Cases and audit entries of a payment are its merchant's, which the user was just checked for.
        page = payment_page(
            intent,
            now=timezone.now(),
            show_cases=self._may_view(request, SupportCase),
            show_audit=self._may_view(request, AuditEntry),
        )
        merchant_admin = self.admin_site._registry.get(Merchant)
        offered = console.payment_actions_for(request.user, intent)
        action_url = f"admin:{self.opts.app_label}_{self.opts.model_name}_action"
        actions = [(a, reverse(action_url, args=[quote(intent.pk), a.name])) for a in offered]
        context = {
            **self.admin_site.each_context(request),
            **page,
            "opts": self.opts,
            "original": intent,
            "title": f"Payment {intent.pk}",
            "has_view_permission": True,
            "merchant_url": (
                reverse("admin:payments_merchant_change", args=[quote(intent.merchant_id)])
                if merchant_admin and merchant_admin.has_view_permission(request, intent.merchant)
                else None
            ),
            "may_view_events": self._may_view(request, Event),
            "may_view_cases": page["cases"] is not None,
            "safe_actions": [(a, url) for a, url in actions if not a.dangerous],
            "dangerous_actions": [(a, url) for a, url in actions if a.dangerous],
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.page_template, context)


admin.site.unregister(PaymentIntent)
admin.site.register(PaymentIntent, SupportPaymentIntentAdmin)

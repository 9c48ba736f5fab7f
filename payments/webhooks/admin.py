"""Admin for webhooks: endpoints (add with the secret shown once, enable/disable, rotate, replay a time
range), the delivery log per event and per endpoint, and redelivery. Every change goes through the
services in `endpoints.py`, so the admin gets the same SSRF checks and rules as the API. Every action
needs the change permission on webhook endpoints (`ActionPermissionMixin`), checked per selected object."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html

from payments.admin_access import (
    ActionPermissionMixin,
    EvidenceAdmin,
    MerchantListFilter,
    ReadOnlyInline,
)
from payments.admin_filters import endpoints_disabled_by_gateway, endpoints_failing
from payments.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint

from . import endpoints, guard
from .events import EVENT_TYPES

ROTATION_OVERLAP = timedelta(hours=24)


class FailingFilter(admin.SimpleListFilter):
    title = "health"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return [
            ("failing", "failing now (still enabled)"),
            ("disabled", "disabled by the gateway (410 or failing)"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "failing":
            return endpoints_failing(queryset)
        if self.value() == "disabled":
            return endpoints_disabled_by_gateway(queryset)
        return queryset


class EndpointForm(forms.ModelForm):
    url = forms.URLField(
        max_length=2000, assume_scheme="https", help_text="https, resolving to public addresses"
    )
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="none ticked: every type",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("merchant", "url", "description", "event_types")

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            guard.destination(url)
        except guard.UrlRefused as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc
        return url


class ReplayForm(forms.Form):
    since = forms.DateTimeField(help_text="events created at or after (YYYY-MM-DD HH:MM, server time zone)")
    until = forms.DateTimeField(help_text="and before")


ENDPOINT_CHANGE = "payments.change_webhookendpoint"


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ActionPermissionMixin, admin.ModelAdmin):
    form = EndpointForm
    list_display = ("id", "merchant", "url", "enabled", "health", "last_success_at", "created_at")
    list_filter = (("merchant", MerchantListFilter), "enabled", "disabled_reason", FailingFilter)
    search_fields = ("id", "url", "merchant__name", "merchant__id")
    readonly_fields = (
        "enabled",
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "last_success_at",
        "created_at",
        "deleted_at",
        "delivery_log",
    )
    actions = ["enable", "disable", "rotate_secret", "replay_range"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (("merchant",) if obj else ())

    def has_change_permission(self, request, obj=None):
        return self.has_action_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # endpoints are disabled or deleted (soft) by the merchant; their log stays

    @admin.display(description="health")
    def health(self, endpoint):
        if not endpoint.enabled and endpoint.disabled_reason in ("gone", "failing"):
            return format_html(
                '<strong style="color:#ba2121">disabled: {}</strong>', endpoint.get_disabled_reason_display()
            )
        if endpoint.failing_since:
            return format_html(
                '<span style="color:#b35c00">failing since {}</span>', endpoint.failing_since.strftime("%c")
            )
        return "ok" if endpoint.enabled else endpoint.get_disabled_reason_display()

    @admin.display(description="delivery log")
    def delivery_log(self, endpoint):
        url = reverse("admin:payments_webhookdelivery_changelist") + f"?endpoint__id__exact={endpoint.pk}"
        return format_html('<a href="{}">{} deliveries</a>', url, endpoint.deliveries.count())

    def save_model(self, request, obj, form, change):
        """Through the services: the SSRF check, and the secret shown once."""
        data = form.cleaned_data
        if change:
            endpoints.endpoint_update(
                endpoint=obj,
                url=data["url"],
                event_types=data["event_types"],
                description=data["description"],
                now=timezone.now(),
            )
            return
        endpoint, secret = endpoints.endpoint_create(
            merchant=data["merchant"],
            url=data["url"],
            event_types=data["event_types"],
            description=data["description"],
            now=timezone.now(),
        )
        obj.pk = endpoint.pk
        obj.secret_shown_once = secret  # not a field: lives until the response below is rendered

    def response_add(self, request, obj, post_url_continue=None):
        return self._secrets_page(request, "Webhook endpoint added", [(obj, obj.secret_shown_once)])

    def _secrets_page(self, request, title: str, shown: list[tuple[WebhookEndpoint, str]]):
        """Secrets are shown on this page once, never in messages (kept in a cookie or the session until
        the next page) and never cached."""
        response = TemplateResponse(
            request,
            "admin/payments/webhookendpoint/secrets.html",
            {**self.admin_site.each_context(request), "opts": self.opts, "title": title, "shown": shown},
        )
        add_never_cache_headers(response)
        return response

    @admin.action(description="Enable (paused deliveries resume)", permissions=("action",))
    def enable(self, request, queryset):
        self.require_action_permission(request, queryset)
        for endpoint in queryset:
            try:
                queued = endpoints.endpoint_enable(endpoint=endpoint, now=timezone.now())
            except endpoints.NotFound:
                self.message_user(request, f"{endpoint.pk} was deleted by the merchant", messages.ERROR)
                continue
            self.message_user(request, f"{endpoint.pk} enabled; {queued} deliveries queued")

    @admin.action(description="Disable (pending deliveries pause)", permissions=("action",))
    def disable(self, request, queryset):
        self.require_action_permission(request, queryset)
        for endpoint in queryset:
            paused = endpoints.endpoint_disable(endpoint=endpoint, reason="operator", now=timezone.now())
            self.message_user(request, f"{endpoint.pk} disabled; {paused} deliveries paused")

    @admin.action(
        description="Rotate the signing secret (the old one signs for 24 h more)", permissions=("action",)
    )
    def rotate_secret(self, request, queryset):
        self.require_action_permission(request, queryset)
        shown = [
            (
                endpoint,
                endpoints.endpoint_secret_rotate(
                    endpoint=endpoint, overlap=ROTATION_OVERLAP, now=timezone.now()
                ),
            )
            for endpoint in queryset
        ]
        return self._secrets_page(request, "Signing secrets rotated", shown)

    @admin.action(description="Replay the events of a time range…", permissions=("action",))
    def replay_range(self, request, queryset):
        self.require_action_permission(request, queryset)
        form = ReplayForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            actor = f"admin:{request.user.get_username()}"
            for endpoint in queryset:
                try:
                    queued = endpoints.endpoint_replay(
                        endpoint=endpoint,
                        since=form.cleaned_data["since"],
                        until=form.cleaned_data["until"],
                        now=timezone.now(),
                        requested_by=actor,
                    )
                except endpoints.InvalidRequest as exc:
                    self.message_user(request, f"{endpoint.pk}: {exc.message}", messages.ERROR)
                    continue
                self.message_user(request, f"{endpoint.pk}: {queued} events queued again")
            return None
        return TemplateResponse(
            request,
            "admin/payments/webhookendpoint/replay.html",
            {**self.admin_site.each_context(request), "form": form, "endpoints": list(queryset)},
        )


class AttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ("number", "started_at", "outcome", "status_code", "latency_ms", "error", "response_excerpt")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ActionPermissionMixin, EvidenceAdmin):
    merchant_path = "endpoint__merchant"
    list_display = (
        "id",
        "event",
        "endpoint",
        "kind",
        "state",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("state", "kind")
    search_fields = ("event__id", "endpoint__id", "event__intent__id")
    list_select_related = ("event", "endpoint")
    inlines = [AttemptInline]
    actions = ["redeliver"]
    action_permission = ENDPOINT_CHANGE

    @admin.action(description="Send again (a replay with the same webhook-id)", permissions=("action",))
    def redeliver(self, request, queryset):
        deliveries = list(queryset.select_related("event", "endpoint"))
        self.require_action_permission(request, deliveries)
        actor = f"admin:{request.user.get_username()}"
        sent = 0
        for delivery in deliveries:
            try:
                endpoints.event_redeliver(
                    event=delivery.event, endpoint=delivery.endpoint, now=timezone.now(), requested_by=actor
                )
                sent += 1
            except endpoints.InvalidRequest as exc:
                self.message_user(request, f"{delivery.pk}: {exc.message}", messages.ERROR)
        self.message_user(request, f"{sent} deliveries queued again")


class DeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = ("log", "endpoint", "kind", "state", "attempts", "last_status_code", "delivered_at")

    @admin.display(description="delivery")
    def log(self, delivery):
        url = reverse("admin:payments_webhookdelivery_change", args=[delivery.pk])
        return format_html('<a href="{}">#{}</a>', url, delivery.pk)


@admin.register(Event)
class EventAdmin(ActionPermissionMixin, EvidenceAdmin):
    list_display = ("id", "merchant", "intent", "type", "sequence", "position", "created_at")
    list_filter = (("merchant", MerchantListFilter), "type")
    search_fields = ("id", "intent__id", "intent__merchant_order_id")
    inlines = [DeliveryInline]
    actions = ["redeliver"]
    action_permission = ENDPOINT_CHANGE

    @admin.action(
        description="Send again to every subscribed endpoint (same webhook-id)", permissions=("action",)
    )
    def redeliver(self, request, queryset):
        self.require_action_permission(request, queryset)
        actor = f"admin:{request.user.get_username()}"
        for event in queryset:
            try:
                queued = endpoints.event_redeliver(event=event, now=timezone.now(), requested_by=actor)
            except endpoints.InvalidRequest as exc:
                self.message_user(request, f"{event.pk}: {exc.message}", messages.ERROR)
                continue
            self.message_user(request, f"{event.pk}: queued for {len(queued)} endpoints")

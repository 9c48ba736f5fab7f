"""The console panel on the admin index: the queues the user may open, counted in their merchants.
A template tag (templates/admin/index.html) rather than a custom AdminSite, so `admin.site` stays as it is."""

from __future__ import annotations

from django import template
from django.utils import timezone

from support.queues import queues_count

register = template.Library()


@register.inclusion_tag("admin/support/queues.html", takes_context=True)
def support_queues(context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return {"queues": []}
    return {"queues": queues_count(user, timezone.now())}

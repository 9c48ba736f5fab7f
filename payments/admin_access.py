"""Who may act in the admin. Every admin action (per selected object) and every custom admin view (for its
object) asks one question, `has_action_permission(request, obj)`, so that scoping staff to a merchant
(roles with django-guardian object permissions) is added here once and holds everywhere."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db import models


class ActionPermissionMixin:
    """For a ModelAdmin: actions declare `@admin.action(permissions=("action",))`, so a user who may not
    run them never sees them; each action calls `require_action_permission` on what was selected before
    it changes anything, and a POST naming an action the user does not see is a 403.

    A custom admin view (get_urls) calls `require_action_permission(request, [obj])` before it does
    anything and the change page shows its button only when `has_action_permission(request, obj)`.

    `action_permission` is the model permission acting needs ("app_label.codename"); by default the
    change permission of this admin's model. Admins of read-only evidence (events, deliveries) name the
    permission of what their actions change (the webhook endpoint)."""

    action_permission: str | None = None

    def has_action_permission(self, request, obj: models.Model | None = None) -> bool:
        """May this user act on `obj` (None: on some object of this admin)? The one place to add the
        object's merchant to the check."""
        perm = self.action_permission
        if perm is None:
            opts = self.opts
            perm = f"{opts.app_label}.{get_permission_codename('change', opts)}"
        return request.user.has_perm(perm)

    def require_action_permission(self, request, objects: Iterable[models.Model]) -> None:
        """All or nothing: a selection holding one object the user may not act on is refused whole."""
        if not all(self.has_action_permission(request, obj) for obj in objects):
            raise PermissionDenied

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            requested = {name for name in request.POST.getlist("action") if name}
            if requested - set(self.get_actions(request)):
                raise PermissionDenied
        return super().changelist_view(request, extra_context)

"""Who may act in the admin, and on which merchants.

Every admin action (per selected object) and every custom admin view (for its object) asks one question,
`has_action_permission(request, obj)`. Staff see and touch only the merchants they are granted: a
django-guardian object permission `payments.view_merchant` on each `Merchant` (`staff_merchants`, the one
rule; roles, which are groups of model permissions, are defined in the `support` app). Superusers see all.
Django's stock admin never passes the object to its permission checks on lists and actions, so the
querysets, the merchant choices of forms, the merchant list filter and the object checks are scoped here."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404
from guardian.shortcuts import get_objects_for_user

from .models import Merchant

# The object permission that grants a staff user one merchant (given and taken by `grant_role` and
# `revoke_role`). The model-level permission of the same name (a role's "may view merchants") never
# widens the scope: global permissions are not accepted below.
MERCHANT_ACCESS_PERMISSION = "payments.view_merchant"


def staff_merchants(user) -> models.QuerySet[Merchant]:
    """The merchants this user may see and act on: all for an active superuser, those granted by the
    object permission otherwise (none for anyone else)."""
    if not user.is_active:
        return Merchant.objects.none()
    if user.is_superuser:
        return Merchant.objects.all()
    return get_objects_for_user(
        user, MERCHANT_ACCESS_PERMISSION, klass=Merchant, accept_global_perms=False, with_superuser=False
    )


def may_act_for_merchant(user, permission: str | None, merchant_id: str) -> bool:
    """The one question every console action asks: an active staff user holding `permission`
    ("app_label.codename"; None: only the merchant is asked about), for a merchant among theirs
    (superusers: any)."""
    return (
        user.is_active
        and user.is_staff
        and (permission is None or user.has_perm(permission))
        and staff_merchants(user).filter(pk=merchant_id).exists()
    )


def _merchant_id_of(obj: models.Model, path: str):
    """Follow `path` ("merchant", "endpoint__merchant", "pk" for a merchant) from obj to its merchant's id."""
    if path == "pk":
        return obj.pk
    *hops, last = path.split("__")
    for hop in hops:
        obj = getattr(obj, hop)
        if obj is None:
            return None
    return getattr(obj, f"{last}_id")


class MerchantScopedAdmin:
    """For a ModelAdmin of rows that belong to a merchant: `merchant_path` is the lookup from the model to
    its merchant. The list, the change pages (a row out of scope is a 404), the merchant choices of the
    add form, the merchant list filter and every object-level permission are limited to `staff_merchants`.
    """

    merchant_path: str = "merchant"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.merchant_path}__in": staff_merchants(request.user)})

    def in_merchant_scope(self, request, obj: models.Model | None) -> bool:
        if obj is None or request.user.is_superuser:
            return True
        merchant_id = _merchant_id_of(obj, self.merchant_path)
        return merchant_id is not None and staff_merchants(request.user).filter(pk=merchant_id).exists()

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None and not request.user.is_superuser:
            raise Http404  # not a redirect that would tell a row of another merchant from no row
        return obj

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self.in_merchant_scope(request, obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self.in_merchant_scope(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self.in_merchant_scope(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.related_model is Merchant:
            kwargs["queryset"] = staff_merchants(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # A form naming another merchant (one the user was not offered) is refused, not merely invalid;
        # a merchant that does not exist stays a form error.
        named = request.POST.get("merchant") if request.method == "POST" else None
        if named and self.merchant_path == "merchant" and not request.user.is_superuser:
            others = Merchant.objects.filter(pk=named).exclude(pk__in=staff_merchants(request.user))
            if others.exists():
                raise PermissionDenied
        return super().changeform_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        # An action on rows out of scope is refused whole (the stock admin would silently drop them).
        if request.method == "POST" and request.POST.get("action") and not request.user.is_superuser:
            selected = set(request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))
            try:
                found = self.get_queryset(request).filter(pk__in=selected).count()
            except (ValueError, ValidationError) as exc:
                raise PermissionDenied from exc
            if found != len(selected):
                raise PermissionDenied
        return super().changelist_view(request, extra_context)


class MerchantListFilter(admin.RelatedFieldListFilter):
    """The merchant list filter offers only the merchants the user may see."""

    def field_choices(self, field, request, model_admin):
        return [(m.pk, str(m)) for m in staff_merchants(request.user).order_by("name", "pk")]


class ActionPermissionMixin(MerchantScopedAdmin):
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
        """May this user act on `obj` (None: on some object of this admin)? The model permission, and
        the object's merchant among the user's."""
        perm = self.action_permission
        if perm is None:
            opts = self.opts
            perm = f"{opts.app_label}.{get_permission_codename('change', opts)}"
        return request.user.has_perm(perm) and self.in_merchant_scope(request, obj)

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


class EvidenceAdmin(admin.ModelAdmin):
    """Evidence and its consequences are append-only: viewable, never edited here (also the outbox and
    the webhook delivery log). Evidence of a merchant's payments adds `MerchantScopedAdmin` in front."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    """A log shown under its parent: every field read-only, nothing added or deleted here."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False

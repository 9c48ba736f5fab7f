"""Every admin change to the gateway's configuration writes an audit entry, in the transaction of the
change: who (username and roles), what (`config.add` / `config.change` / `config.delete`, or
`config.<action>` for a list action such as `config.revoke`), which object and merchant, the changed
fields' values before and after, and from where (X-Request-ID, client address).

payments may not import support, so its admins are re-registered here as subclasses with
`AuditedAdminMixin` in front: they keep saving through payments' services (`super()`), and the mixin
compares the stored rows before and after. Secrets never enter an entry: API key digests are left
out, a node URL is recorded redacted (a change to its password still shows as a change), webhook
signing secrets appear only as their ids and times, and a user's password hash never."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import models, transaction
from django.db.models import Max
from django.utils import timezone

import payments.admin  # noqa: F401 (registers the admins re-registered below)
from payments.chains.redaction import redact_url
from payments.models import (
    ApiKey,
    Asset,
    Event,
    Merchant,
    Network,
    NetworkAsset,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)

from .audit import audit_record, request_audit_context
from .roles import roles_of

LEFT_OUT = object()
# Per model, fields recorded other than as stored: a function of the stored value, or LEFT_OUT.
REDACTED: dict[type[models.Model], dict[str, Any]] = {
    Network: {"rpc_url": redact_url},
    ApiKey: {"digest": LEFT_OUT},
    User: {"password": LEFT_OUT, "last_login": LEFT_OUT},
}


request_context = request_audit_context


def _signing_secrets(endpoint: WebhookEndpoint) -> list[dict]:
    """A rotation's trace without the secrets: which exist and until when they sign."""
    return [
        {"id": s.pk, "created_at": s.created_at, "expires_at": s.expires_at}
        for s in WebhookSecret.objects.filter(endpoint_id=endpoint.pk).order_by("pk")
    ]


EXTRA: dict[type[models.Model], dict[str, Callable[[Any], Any]]] = {
    WebhookEndpoint: {"signing_secrets": _signing_secrets},
}


def stored_state(obj: models.Model) -> dict:
    """The row as stored, for comparing (secrets still in it: see `recorded`). `auto_now` times are
    left out: the entry has its own time."""
    model = type(obj)
    left_out = {name for name, how in REDACTED.get(model, {}).items() if how is LEFT_OUT}
    state: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if field.name in left_out or getattr(field, "auto_now", False):
            continue
        state[field.name] = field.value_from_object(obj)
    for field in model._meta.many_to_many:
        state[field.name] = sorted(field.value_from_object(obj), key=lambda o: str(o.pk))
        state[field.name] = [o.pk for o in state[field.name]]
    for name, read in EXTRA.get(model, {}).items():
        state[name] = read(obj)
    return state


def _plain(value: Any) -> Any:
    """JSON values: times in ISO 8601, decimals as strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def recorded(model: type[models.Model], state: dict | None) -> dict | None:
    """The state as the entry records it: redacted, in JSON values."""
    if state is None:
        return None
    rules = REDACTED.get(model, {})
    return {name: _plain(rules[name](value) if name in rules else value) for name, value in state.items()}


def states(model: type[models.Model], pks: Iterable) -> dict:
    return {obj.pk: stored_state(obj) for obj in model._default_manager.filter(pk__in=list(pks))}


def merchant_of(model: type[models.Model], state: dict) -> str:
    if model is Merchant:
        return state.get("id") or ""
    return state.get("merchant") or ""


def config_audit(request, verb: str, model, pk, before: dict | None, after: dict | None) -> bool:
    """One entry for one object, with only the fields that changed (all of them when it was added or
    deleted); nothing when nothing changed. Returns whether an entry was written."""
    merchant_id = merchant_of(model, after or before or {})
    if before is not None and after is not None:
        changed = [k for k in after if before.get(k) != after.get(k)]
        changed += [k for k in before if k not in after]
        if not changed:
            return False
        before = {k: before.get(k) for k in changed}
        after = {k: after.get(k) for k in changed}
    elif before is None and after is None:
        return False
    audit_record(
        actor=request.user.get_username(),
        role=roles_of(request.user),
        action=f"config.{verb}",
        now=timezone.now(),
        merchant_id=merchant_id,
        object_type=model._meta.label_lower,
        object_id=str(pk),
        before=recorded(model, before),
        after=recorded(model, after),
        **request_context(request),
    )
    return True


def audit_rows(request, verb: str, model, before: dict, after: dict) -> None:
    """Per row: added, changed (with `verb`) or deleted."""
    for pk in sorted(set(before) | set(after), key=str):
        was, now = before.get(pk), after.get(pk)
        row_verb = "add" if was is None else "delete" if now is None else verb
        config_audit(request, row_verb, model, pk, was, now)


class AuditedAdminMixin:
    """In front of a ModelAdmin: its add and change forms (inline rows one by one), deletions and list
    actions are audited. The add/change view and the delete view are one transaction each (Django's);
    a list action is made one here. An admin that audits an action another way names it in
    `audit_skip_actions`; one whose saves are audited elsewhere sets `obj.audited = True`."""

    audit_skip_actions: tuple[str, ...] = ()

    def save_model(self, request, obj, form, change):
        request.config_audit_before = (
            stored_state(type(obj)._default_manager.get(pk=obj.pk)) if change else None
        )
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        self._audit_object(request, form, change)  # when no inline formset did it first

    def save_formset(self, request, form, formset, change):
        self._audit_object(request, form, change)  # the object's entry before its inline rows'
        rows = formset.model._default_manager.filter(**{formset.fk.name: form.instance})
        before = {row.pk: stored_state(row) for row in rows}
        super().save_formset(request, form, formset, change)
        audit_rows(
            request, "change", formset.model, before, {row.pk: stored_state(row) for row in rows.all()}
        )

    def _audit_object(self, request, form, change) -> None:
        """Once per request, after the object and its many-to-many fields are saved (save_related saves
        those before the inline formsets)."""
        obj = form.instance
        if getattr(request, "config_audit_done", False) or obj.pk is None or getattr(obj, "audited", False):
            return
        request.config_audit_done = True
        after = stored_state(type(obj)._default_manager.get(pk=obj.pk))
        before = getattr(request, "config_audit_before", None)
        if change and before is None:
            return  # nothing was read before the save: nothing this admin changed
        config_audit(request, "change" if change else "add", type(obj), obj.pk, before, after)

    def delete_model(self, request, obj):
        before = stored_state(obj)
        pk = obj.pk
        super().delete_model(request, obj)
        config_audit(request, "delete", type(obj), pk, before, None)

    def get_actions(self, request):
        actions = super().get_actions(request)
        return {
            name: (func if name in self.audit_skip_actions else _audited(func, name), name, description)
            for name, (func, _, description) in actions.items()
        }


def _audited(func, name: str):
    verb = "delete" if name == "delete_selected" else name

    @functools.wraps(func)
    def action(modeladmin, request, queryset):
        model = queryset.model
        pks = list(queryset.values_list("pk", flat=True))
        with transaction.atomic():
            before = states(model, pks)
            last_delivery = WebhookDelivery.objects.aggregate(last=Max("pk"))["last"] or 0
            response = func(modeladmin, request, queryset)
            audit_rows(request, verb, model, before, states(model, pks))
            _audit_sends(request, verb, model, pks, last_delivery)
        return response

    return action


def _audit_sends(request, verb: str, model, pks: list, last_delivery: int) -> None:
    """Events sent again (a replay, a redelivery) change no configuration row but are an act on the
    merchant's behalf: one entry per merchant naming the deliveries queued."""
    made = WebhookDelivery.objects.filter(pk__gt=last_delivery).values_list(
        "pk", "event_id", "endpoint_id", "endpoint__merchant_id"
    )
    by_merchant: dict[str, list[tuple]] = {}
    for row in made.order_by("pk"):
        by_merchant.setdefault(row[3], []).append(row)
    for merchant_id, rows in by_merchant.items():
        audit_record(
            actor=request.user.get_username(),
            role=roles_of(request.user),
            action=f"webhook.{verb}",
            now=timezone.now(),
            merchant_id=merchant_id,
            object_type=model._meta.label_lower,
            object_id=",".join(map(str, pks))[:80],
            after={
                "deliveries": [r[0] for r in rows],
                "events": sorted({r[1] for r in rows}),
                "endpoints": sorted({r[2] for r in rows}),
            },
            **request_context(request),
        )


def reregister(model: type[models.Model], admin_class: type | None = None) -> type:
    """Replace the registered admin of `model` with `admin_class` (default: the registered one with
    `AuditedAdminMixin` in front)."""
    registered = type(admin.site._registry[model])
    if admin_class is None:
        admin_class = type(
            f"Audited{registered.__name__}", (AuditedAdminMixin, registered), {"__module__": __name__}
        )
    admin.site.unregister(model)
    admin.site.register(model, admin_class)
    return admin_class


# Users and groups too: a role given in the admin (a group, a permission, staff or superuser status) is a
# role grant like `grant_role`'s.
for _model in (
    Network,
    Asset,
    NetworkAsset,
    Merchant,
    ApiKey,
    WebhookEndpoint,
    Event,
    WebhookDelivery,
    User,
    Group,
):
    reregister(_model)

from . import admin_wallets  # noqa: E402, F401 (the wallet admin: keys through dangerous actions)

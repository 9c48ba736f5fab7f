"""Roles of the back office. A role is a `Group` of model permissions, made by the data migrations of
this app (0003_roles holds the table; docs/SUPPORT.md explains it). Which merchants a staff user may
touch is a separate grant: the object permission `payments.admin_access.MERCHANT_ACCESS_PERMISSION`
on each `Merchant`, given and withdrawn with the grants below (and `grant_role` / `revoke_role`).
A user's roles apply to every merchant they are granted."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from payments.admin_access import MERCHANT_ACCESS_PERMISSION, staff_merchants
from payments.models import Merchant

from .audit import audit_record

SUPPORT_AGENT = "support_agent"
SUPPORT_LEAD = "support_lead"
FINANCE = "finance"
MERCHANT_ADMIN = "merchant_admin"
AUDITOR = "auditor"
ROLES = (SUPPORT_AGENT, SUPPORT_LEAD, FINANCE, MERCHANT_ADMIN, AUDITOR)
# The audit log's actor for grants made from a shell (grant_role, revoke_role): the operator is whoever
# runs manage.py on the server, which the gateway cannot name.
COMMAND_ACTOR = "system:manage.py"


def roles_of(user) -> str:
    """What the audit log records as the acting user's role: their groups (at most 200 characters, the
    columns' width), or "superuser"."""
    names = ",".join(sorted(user.groups.values_list("name", flat=True)))
    return names[:200] or ("superuser" if user.is_superuser else "")


class RoleError(ValueError):
    pass


def role_group(role: str) -> Group:
    if role not in ROLES:
        raise RoleError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    try:
        return Group.objects.get(name=role)
    except Group.DoesNotExist as exc:
        raise RoleError(f"role {role!r} has no group: run the migrations") from exc


def _merchants(merchant_ids: Iterable[str]) -> list[Merchant]:
    ids = list(dict.fromkeys(merchant_ids))
    found = {m.pk: m for m in Merchant.objects.filter(pk__in=ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise RoleError(f"no merchant {', '.join(missing)}")
    return [found[i] for i in ids]


def _standing(user) -> dict:
    """What the audit log records of a user's roles and merchants, before and after a change."""
    return {
        "is_staff": user.is_staff,
        "roles": sorted(user.groups.filter(name__in=ROLES).values_list("name", flat=True)),
        "merchants": sorted(m.pk for m in staff_merchants(user)),
    }


@transaction.atomic
def role_grant(*, user, role: str, merchant_ids: Iterable[str] = (), actor: str) -> list[Merchant]:
    """Make `user` staff with `role` and grant it the merchants, with an audit entry; all or nothing.
    Returns the merchants the user may now touch."""
    group, merchants = role_group(role), _merchants(merchant_ids)
    _refuse_widening(user, role, merchants)
    before = _standing(user)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(group)
    for merchant in merchants:
        assign_perm(MERCHANT_ACCESS_PERMISSION, user, merchant)
    _audit(user, "role.granted", role, before, actor)
    return list(staff_merchants(user))


def _refuse_widening(user, role: str, merchants: list[Merchant]) -> None:
    """A user's roles apply to every merchant the user is granted (guardian grants the merchant, groups the
    permissions). So a grant may not give one of the user's roles a merchant it was not meant for: a user
    who holds another role gets a new role, or a new merchant, only for exactly the merchants they have
    (or naming none: the same merchants). Different roles on different merchants: two users."""
    held = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    others = held - {role}
    if not others or not merchants:
        return
    granted = set(staff_merchants(user).values_list("pk", flat=True)) if user.pk else set()
    wanted = {m.pk for m in merchants}
    if wanted - granted or (role not in held and wanted != granted):
        raise RoleError(
            f"{user.get_username()} is also {', '.join(sorted(others))} for {', '.join(sorted(granted)) or 'no merchant'}:"
            f" a role applies to every merchant its user is granted, so granting {role} for"
            f" {', '.join(sorted(wanted))} would widen the other role(s). Use another user for other merchants"
        )


def _audit(user, action: str, role: str, before: dict, actor: str) -> None:
    audit_record(
        actor=actor,
        action=action,
        now=timezone.now(),
        role=role,
        object_type="auth.user",
        object_id=str(user.pk),
        before=before,
        after=_standing(user),
    )


@transaction.atomic
def role_revoke(*, user, role: str, merchant_ids: Iterable[str] = (), actor: str) -> list[Merchant]:
    """With merchants: withdraw those merchants (the role stays). Without: take the role away; a user
    left with no role loses every merchant grant too. Audited. Returns the merchants the user may still
    touch."""
    group, merchants = role_group(role), _merchants(merchant_ids)
    before = _standing(user)
    if merchants:
        for merchant in merchants:
            remove_perm(MERCHANT_ACCESS_PERMISSION, user, merchant)
    else:
        user.groups.remove(group)
        if not user.groups.filter(name__in=ROLES).exists():
            for merchant in staff_merchants(user):
                remove_perm(MERCHANT_ACCESS_PERMISSION, user, merchant)
    _audit(user, "role.revoked", role, before, actor)
    return list(staff_merchants(user))

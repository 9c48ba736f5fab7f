"""Roles as groups, the merchant grant, and the commands that set staff up (grant_role, revoke_role)."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, Permission, User
from django.core.management import CommandError, call_command
from django.test import Client

from payments.admin_access import staff_merchants
from tests.factories import make_merchant

pytestmark = pytest.mark.django_db

ROLES = ("support_agent", "support_lead", "finance", "merchant_admin", "auditor")


def grant(*args, env_password: str | None = None, monkeypatch=None) -> str:
    if monkeypatch is not None:
        if env_password is None:
            monkeypatch.delenv("GATEWAY_STAFF_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("GATEWAY_STAFF_PASSWORD", env_password)
    out = io.StringIO()
    call_command("grant_role", *args, stdout=out)
    return out.getvalue()


def test_every_role_views_every_payments_model_and_the_auditor_changes_nothing():
    payments_models = Permission.objects.filter(
        content_type__app_label="payments", codename__startswith="view_"
    )
    assert payments_models.count() > 10
    for role in ROLES:
        group = Group.objects.get(name=role)
        assert set(payments_models) <= set(group.permissions.all()), role
    auditor = Group.objects.get(name="auditor").permissions.values_list("codename", flat=True)
    assert all(codename.startswith("view_") for codename in auditor)


def test_grant_role_creates_staff_with_a_password_shown_once(monkeypatch):
    own, other = make_merchant("Own", wallets=False), make_merchant("Other", wallets=False)
    out = grant(
        "alice",
        "support_lead",
        "--merchant",
        own.pk,
        "--create",
        "--email",
        "a@example.com",
        monkeypatch=monkeypatch,
    )
    password = re.search(r"password \(shown once[^:]*\): (\S+)", out).group(1)
    alice = User.objects.get(username="alice")
    assert alice.is_staff and not alice.is_superuser and alice.email == "a@example.com"
    assert alice.check_password(password) and len(password) >= 20
    assert list(alice.groups.values_list("name", flat=True)) == ["support_lead"]
    assert list(staff_merchants(alice)) == [own] and other not in staff_merchants(alice)


def test_grant_role_takes_the_password_from_the_environment_and_prints_none(monkeypatch):
    merchant = make_merchant(wallets=False)
    out = grant(
        "bob",
        "auditor",
        "--merchant",
        merchant.pk,
        "--create",
        env_password="from the env 123",
        monkeypatch=monkeypatch,
    )
    assert "password" not in out
    assert User.objects.get(username="bob").check_password("from the env 123")


def test_grant_role_refuses_unknown_users_roles_and_merchants_and_changes_nothing(monkeypatch):
    merchant = make_merchant(wallets=False)
    with pytest.raises(CommandError, match="--create"):
        grant("carol", "finance", "--merchant", merchant.pk)
    with pytest.raises(CommandError):
        grant("carol", "superhero", "--create", monkeypatch=monkeypatch)
    with pytest.raises(CommandError, match="no merchant mer_nope"):
        grant(
            "carol",
            "finance",
            "--merchant",
            merchant.pk,
            "--merchant",
            "mer_nope",
            "--create",
            monkeypatch=monkeypatch,
        )
    assert not User.objects.filter(username="carol").exists()

    dave = User.objects.create_user("dave", password="x")
    with pytest.raises(CommandError, match="no merchant"):
        grant("dave", "finance", "--merchant", merchant.pk, "--merchant", "mer_nope")
    dave.refresh_from_db()
    assert not dave.is_staff and not dave.groups.exists() and not staff_merchants(dave).exists()


def test_grant_role_makes_an_existing_user_staff_and_adds_merchants(monkeypatch):
    first, second = make_merchant("A", wallets=False), make_merchant("B", wallets=False)
    erin = User.objects.create_user("erin", password="x")
    grant("erin", "finance", "--merchant", first.pk)
    grant("erin", "finance", "--merchant", second.pk)
    out = grant("erin", "auditor")  # another role: on the merchants she has
    erin.refresh_from_db()
    assert erin.is_staff
    assert set(erin.groups.values_list("name", flat=True)) == {"finance", "auditor"}
    assert set(staff_merchants(erin)) == {first, second}
    assert first.pk in out and second.pk in out


def test_revoke_role_withdraws_merchants_or_the_role(monkeypatch):
    first, second = make_merchant("A", wallets=False), make_merchant("B", wallets=False)
    grant(
        "fay",
        "support_agent",
        "--merchant",
        first.pk,
        "--merchant",
        second.pk,
        "--create",
        env_password="pw of fay 12345",
        monkeypatch=monkeypatch,
    )
    grant("fay", "finance")
    fay = User.objects.get(username="fay")

    call_command("revoke_role", "fay", "support_agent", "--merchant", second.pk, stdout=io.StringIO())
    assert list(staff_merchants(fay)) == [first]
    assert set(fay.groups.values_list("name", flat=True)) == {"support_agent", "finance"}

    call_command("revoke_role", "fay", "support_agent", stdout=io.StringIO())
    assert list(fay.groups.values_list("name", flat=True)) == ["finance"]
    assert list(staff_merchants(fay)) == [first], "merchants stay while a role remains"

    call_command("revoke_role", "fay", "finance", stdout=io.StringIO())
    assert not fay.groups.exists() and not staff_merchants(fay).exists()
    with pytest.raises(CommandError, match="no user"):
        call_command("revoke_role", "nobody", "finance")


def test_the_role_of_a_model_permission_never_widens_the_merchant_scope(monkeypatch):
    """Every role has the model-level view_merchant; only the object permission grants a merchant."""
    make_merchant("A", wallets=False)
    grant("gus", "auditor", "--create", env_password="pw of gus 12345", monkeypatch=monkeypatch)
    gus = User.objects.get(username="gus")
    assert gus.has_perm("payments.view_merchant")
    assert not staff_merchants(gus).exists()
    client = Client()
    client.force_login(gus)
    page = client.get("/admin/payments/merchant/")
    assert page.status_code == 200 and b"0 merchants" in page.content


def test_superusers_see_every_merchant(admin_client):
    own, other = make_merchant("Own shop", wallets=False), make_merchant("Other shop", wallets=False)
    page = admin_client.get("/admin/payments/merchant/")
    for merchant in (own, other):
        assert f"/admin/payments/merchant/{quote(merchant.pk)}/change/".encode() in page.content
    assert admin_client.get(f"/admin/payments/merchant/{quote(other.pk)}/change/").status_code == 200


@pytest.mark.parametrize("model", ["apikey", "wallet", "webhookendpoint"])
def test_add_forms_offer_only_the_granted_merchants(model, monkeypatch):
    own, other = make_merchant("Own shop", wallets=False), make_merchant("Other shop", wallets=False)
    grant(
        "hal",
        "merchant_admin",
        "--merchant",
        own.pk,
        "--create",
        env_password="pw of hal 12345",
        monkeypatch=monkeypatch,
    )
    client = Client()
    client.force_login(User.objects.get(username="hal"))
    page = client.get(f"/admin/payments/{model}/add/")
    assert page.status_code == 200
    assert f'<option value="{own.pk}"'.encode() in page.content
    assert other.pk.encode() not in page.content and b"Other shop" not in page.content


def test_the_webhook_admin_does_not_import_the_payments_admin():
    """payments/admin.py registers the webhook admin by importing it; the other way round was a circle."""
    source = Path(__file__).resolve().parents[2] / "payments" / "webhooks" / "admin.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module if node.level == 0 else f"payments.webhooks.{node.module}")
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "payments.admin" not in imported


def test_grants_and_revocations_are_audited(monkeypatch):
    from support.audit import audit_verify
    from support.models import AuditEntry

    merchant = make_merchant(wallets=False)
    grant(
        "ivy",
        "support_lead",
        "--merchant",
        merchant.pk,
        "--create",
        env_password="pw of ivy 12345",
        monkeypatch=monkeypatch,
    )
    call_command("revoke_role", "ivy", "support_lead", stdout=io.StringIO())
    ivy = User.objects.get(username="ivy")
    granted, revoked = AuditEntry.objects.filter(object_type="auth.user", object_id=str(ivy.pk))
    assert (granted.action, granted.role, granted.actor) == (
        "role.granted",
        "support_lead",
        "system:manage.py",
    )
    assert granted.before == {"is_staff": True, "roles": [], "merchants": []}
    assert granted.after == {"is_staff": True, "roles": ["support_lead"], "merchants": [merchant.pk]}
    assert revoked.action == "role.revoked" and revoked.after == {
        "is_staff": True,
        "roles": [],
        "merchants": [],
    }
    assert audit_verify().ok


def test_the_auditor_reads_the_audit_log_and_the_support_roles_work_cases():
    support_views = set(
        Permission.objects.filter(content_type__app_label="support", codename__startswith="view_")
    )
    assert {p.codename for p in support_views} >= {"view_auditentry", "view_supportcase"}
    assert support_views <= set(Group.objects.get(name="auditor").permissions.all())
    for role in ROLES:
        perms = Group.objects.get(name=role).permissions
        works_cases = role in ("support_agent", "support_lead")  # assign, note, change a case's status
        assert perms.filter(codename="change_supportcase").exists() == works_cases, role
        assert perms.filter(codename="add_casenote").exists() == works_cases, role
        assert perms.filter(codename="view_auditentry").exists() == (role == "auditor"), role


@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.django_db(transaction=True)
def test_roles_exist_in_transactional_tests_too(run, monkeypatch):
    """A transactional test flushes the database after it, the migration's groups with it: the next one
    (the browser tests) still finds every role."""
    assert set(Group.objects.filter(name__in=ROLES).values_list("name", flat=True)) == set(ROLES)
    merchant = make_merchant(wallets=False)
    grant(
        f"tx{run}",
        "auditor",
        "--merchant",
        merchant.pk,
        "--create",
        env_password="pw of tx 12345",
        monkeypatch=monkeypatch,
    )


@pytest.mark.django_db(transaction=True)
def test_the_roles_migration_reverses_and_reapplies():
    call_command("migrate", "support", "0002_support_cases", verbosity=0)
    assert not Group.objects.filter(name__in=ROLES).exists()
    call_command("migrate", "support", verbosity=0)
    assert Group.objects.filter(name__in=ROLES).count() == len(ROLES)


def test_a_grant_never_widens_another_role_of_the_same_user():
    """Roles apply to every merchant their user is granted: a lead on A who is made an agent on B would be a
    lead on B too. Such a grant is refused; the same merchants, or none named, are fine."""
    from django.contrib.auth.models import User

    from payments.admin_access import staff_merchants
    from support.roles import RoleError, role_grant
    from tests.factories import make_merchant

    a, b = make_merchant("A"), make_merchant("B", account=1)
    alice = User.objects.create_user("alice")
    role_grant(user=alice, role="support_lead", merchant_ids=[a.pk], actor="test")
    with pytest.raises(RoleError, match="would widen"):
        role_grant(user=alice, role="support_agent", merchant_ids=[b.pk], actor="test")
    with pytest.raises(RoleError, match="would widen"):
        role_grant(user=alice, role="support_agent", merchant_ids=[a.pk, b.pk], actor="test")
    assert set(staff_merchants(alice)) == {a}
    assert list(alice.groups.values_list("name", flat=True)) == ["support_lead"]
    role_grant(user=alice, role="support_lead", merchant_ids=[b.pk], actor="test")  # one role: widen it
    role_grant(user=alice, role="auditor", merchant_ids=[a.pk, b.pk], actor="test")  # exactly her merchants
    role_grant(user=alice, role="finance", actor="test")  # none named: her merchants
    with pytest.raises(RoleError):
        role_grant(user=alice, role="finance", merchant_ids=[make_merchant("C", account=2).pk], actor="test")
    assert set(staff_merchants(alice)) == {a, b}

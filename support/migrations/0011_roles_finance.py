"""Roles and the finance reports (issue 14): finance views the reports, exports the reconciliation and
views the fee schedules and valuations behind it; the auditor views them (it views everything) but does
not export. No payment action is added to finance. Frozen."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = ["view_reports", "view_servicefeeschedule", "view_paidvaluation"]
ADDED = {"finance": [*VIEW, "export_reconciliation"], "auditor": VIEW}


def grant(apps, schema_editor, added: dict[str, list[str]]) -> None:
    """Give each role these permissions of the reconciliation app (made first on a fresh database)."""
    using = schema_editor.connection.alias if schema_editor else "default"
    app_config = apps.get_app_config("reconciliation")
    stub = not getattr(app_config, "models_module", None)
    if stub:
        app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=using)
    if stub:
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in added.items():
        permissions = list(
            Permission.objects.filter(content_type__app_label="reconciliation", codename__in=codenames)
        )
        assert len(permissions) == len(codenames), (role, codenames)
        Group.objects.get(name=role).permissions.add(*permissions)


def withdraw(apps, added: dict[str, list[str]]) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in added.items():
        permissions = Permission.objects.filter(content_type__app_label="reconciliation", codename__in=codenames)
        Group.objects.get(name=role).permissions.remove(*permissions)


def roles_extend(apps, schema_editor):
    """Also run by the tests after a flush (schema_editor None, the project's own app registry)."""
    grant(apps, schema_editor, ADDED)


def roles_shrink(apps, schema_editor):
    withdraw(apps, ADDED)


class Migration(migrations.Migration):
    dependencies = [("support", "0010_roles_refunds"), ("reconciliation", "0002_report_permissions")]

    operations = [migrations.RunPython(roles_extend, roles_shrink)]

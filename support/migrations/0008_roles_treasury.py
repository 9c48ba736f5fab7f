"""Roles and treasury addresses (issue 13): every role views them (as every payments model), merchant admins
declare and retire them (through their dangerous actions, four-eyes per the merchant's policy). Frozen."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = "view_treasuryaddress"
ADDED = {
    "support_agent": [VIEW],
    "support_lead": [VIEW],
    "finance": [VIEW],
    "merchant_admin": [VIEW, "add_treasuryaddress", "change_treasuryaddress"],
    "auditor": [VIEW],
}


def roles_extend(apps, schema_editor):
    """Also run by the tests after a flush (schema_editor None, the project's own app registry)."""
    using = schema_editor.connection.alias if schema_editor else "default"
    app_config = apps.get_app_config("payments")
    stub = not getattr(app_config, "models_module", None)
    if stub:
        app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=using)
    if stub:
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ADDED.items():
        permissions = list(Permission.objects.filter(content_type__app_label="payments", codename__in=codenames))
        assert len(permissions) == len(codenames), (role, codenames)
        Group.objects.get(name=role).permissions.add(*permissions)


def roles_shrink(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ADDED.items():
        permissions = Permission.objects.filter(content_type__app_label="payments", codename__in=codenames)
        Group.objects.get(name=role).permissions.remove(*permissions)


class Migration(migrations.Migration):
    dependencies = [("support", "0007_roles_column_width"), ("payments", "0017_treasury_addresses")]

    operations = [migrations.RunPython(roles_extend, roles_shrink)]

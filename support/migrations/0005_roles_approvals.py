"""Roles gain the four-eyes work (docs/SUPPORT.md, "Roles" and "Dangerous actions"): support leads take
dangerous decisions on payments (`decide_payment`) and change merchants' policies; merchant admins change
policies; everyone in the back office sees approval requests and policies (the auditor everything, as
before). Frozen here, like 0003."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADDED = {
    "support_agent": ["view_approvalrequest", "view_merchantpolicy"],
    "support_lead": ["view_approvalrequest", "view_merchantpolicy", "change_merchantpolicy", "decide_payment"],
    "finance": ["view_approvalrequest", "view_merchantpolicy"],
    "merchant_admin": ["view_approvalrequest", "view_merchantpolicy", "change_merchantpolicy"],
    "auditor": ["view_approvalrequest", "view_merchantpolicy"],
}


def roles_extend(apps, schema_editor):
    """Also run by the tests after a flush (schema_editor None, the project's own app registry)."""
    using = schema_editor.connection.alias if schema_editor else "default"
    app_config = apps.get_app_config("support")
    stub = not getattr(app_config, "models_module", None)
    if stub:
        app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=using)
    if stub:
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ADDED.items():
        permissions = list(Permission.objects.filter(content_type__app_label="support", codename__in=codenames))
        assert len(permissions) == len(codenames), (role, codenames)
        Group.objects.get(name=role).permissions.add(*permissions)


def roles_shrink(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ADDED.items():
        permissions = Permission.objects.filter(content_type__app_label="support", codename__in=codenames)
        Group.objects.get(name=role).permissions.remove(*permissions)


class Migration(migrations.Migration):
    dependencies = [("support", "0004_approvals")]

    operations = [migrations.RunPython(roles_extend, roles_shrink)]

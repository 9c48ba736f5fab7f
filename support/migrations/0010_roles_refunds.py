"""Roles and refunds, settlements (issue 13): every role views them (as every payments model). Making a
refund is a support lead's dangerous action (`support.decide_payment`, held already). Frozen."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = ["view_refund", "view_settlement", "view_settlementleg"]
ADDED = {role: VIEW for role in ("support_agent", "support_lead", "finance", "merchant_admin", "auditor")}


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
    dependencies = [("support", "0009_case_unknown_outflow"), ("payments", "0022_intent_amount_refunded")]

    operations = [migrations.RunPython(roles_extend, roles_shrink)]

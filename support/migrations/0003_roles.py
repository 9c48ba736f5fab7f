"""The back office's roles as groups of model permissions (docs/SUPPORT.md, "Roles"). Every role views
every model of payments; the auditor every model of support too (the audit log included); the support
roles work cases (support.cases checks change_supportcase); a role changes only what it acts on today. Frozen here: a later change to a role
is a later migration. Which merchants a user sees is a per-user grant (grant_role), not part of a role."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# Beyond viewing everything in payments.
CASE_WORK = ["view_supportcase", "change_supportcase", "view_casenote", "add_casenote"]
SUPPORT_PERMISSIONS = {  # of the support app: "all" is every view permission
    "support_agent": CASE_WORK,
    "support_lead": CASE_WORK,
    "finance": [],
    "merchant_admin": [],
    "auditor": "all",
}
ROLE_PERMISSIONS = {
    "support_agent": [],
    "support_lead": ["change_webhookendpoint"],
    "finance": [],
    "merchant_admin": [
        "change_merchant",
        "add_confirmationrule",
        "change_confirmationrule",
        "delete_confirmationrule",
        "add_apikey",
        "change_apikey",
        "add_wallet",
        "change_wallet",
        "add_webhookendpoint",
        "change_webhookendpoint",
    ],
    "auditor": [],
}


def roles_create(apps, schema_editor):
    """Also run by the tests after a flush (schema_editor None, the project's own app registry)."""
    # Permissions are made after all migrations (post_migrate); a fresh database needs them now.
    using = schema_editor.connection.alias if schema_editor else "default"
    for app_config in apps.get_app_configs():
        stub = not getattr(app_config, "models_module", None)  # a migration's app state has no module
        if stub:
            app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
        if stub:
            app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    payments = Permission.objects.filter(content_type__app_label="payments")
    support_perms = Permission.objects.filter(content_type__app_label="support")
    view_all = list(payments.filter(codename__startswith="view_"))
    for role, codenames in ROLE_PERMISSIONS.items():
        extra = list(payments.filter(codename__in=codenames))
        assert len(extra) == len(codenames), (role, codenames)
        wanted = SUPPORT_PERMISSIONS[role]
        support = list(
            support_perms.filter(codename__startswith="view_")
            if wanted == "all"
            else support_perms.filter(codename__in=wanted)
        )
        assert wanted == "all" or len(support) == len(wanted), (role, wanted)
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(view_all + extra + support)


def roles_delete(apps, schema_editor):
    # In SQL: the ORM's cascade would mix this migration's historical Group with guardian's current models.
    roles = list(ROLE_PERMISSIONS)
    groups = "SELECT id FROM auth_group WHERE name = ANY(%s)"
    with schema_editor.connection.cursor() as cursor:
        for table in ("guardian_groupobjectpermission", "auth_group_permissions", "auth_user_groups"):
            cursor.execute(f"DELETE FROM {table} WHERE group_id IN ({groups})", [roles])
        cursor.execute("DELETE FROM auth_group WHERE name = ANY(%s)", [roles])


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("guardian", "0003_remove_groupobjectpermission_guardian_gr_content_ae6aec_idx_and_more"),
        ("payments", "0013_intent_fulfilment"),
        ("support", "0002_support_cases"),
    ]

    operations = [migrations.RunPython(roles_create, roles_delete)]

"""Roles and the daily close and re-verification (issue 14): finance and the auditor view the closes and
the mismatches found; the runs (every merchant's counts) only the auditor. Frozen."""

from django.db import migrations

VIEW = ["view_dailyclose", "view_verificationmismatch"]
ADDED = {"finance": VIEW, "auditor": [*VIEW, "view_verificationrun"]}


def roles_extend(apps, schema_editor):
    """Also run by the tests after a flush (schema_editor None, the project's own app registry)."""
    import importlib

    previous = importlib.import_module("support.migrations.0011_roles_finance")
    previous.grant(apps, schema_editor, ADDED)


def roles_shrink(apps, schema_editor):
    import importlib

    importlib.import_module("support.migrations.0011_roles_finance").withdraw(apps, ADDED)


class Migration(migrations.Migration):
    dependencies = [("support", "0012_case_chain_mismatch"), ("reconciliation", "0004_daily_close")]

    operations = [migrations.RunPython(roles_extend, roles_shrink)]

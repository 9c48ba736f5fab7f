"""The audit log and its signed checkpoints; both append-only in the database. TRUNCATE is allowed only
where the database says so (`gateway.audit_truncate_allowed = on`: the test databases, which are flushed
between tests), never in production."""

from django.db import migrations, models

APPEND_ONLY = """
CREATE FUNCTION support_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('gateway.audit_truncate_allowed', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
"""
TRIGGERS = """
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION support_audit_append_only();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION support_audit_append_only();
"""
DROP_TRIGGERS = """
DROP TRIGGER {table}_append_only ON {table};
DROP TRIGGER {table}_no_truncate ON {table};
"""


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="AuditEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sequence", models.PositiveBigIntegerField(unique=True)),
                ("created_at", models.DateTimeField()),
                ("actor", models.CharField(help_text="username, or system:<process> for automatic entries", max_length=150)),
                ("role", models.CharField(blank=True, max_length=40)),
                ("action", models.CharField(max_length=80)),
                ("merchant_id", models.CharField(blank=True, db_index=True, max_length=40)),
                ("object_type", models.CharField(blank=True, max_length=80)),
                ("object_id", models.CharField(blank=True, max_length=80)),
                ("before", models.JSONField(blank=True, null=True)),
                ("after", models.JSONField(blank=True, null=True)),
                ("reason", models.TextField(blank=True)),
                ("request_id", models.CharField(blank=True, max_length=64)),
                ("client_address", models.CharField(blank=True, max_length=45)),
                ("previous_hash", models.CharField(max_length=64)),
                ("entry_hash", models.CharField(max_length=64, unique=True)),
            ],
            options={
                "verbose_name_plural": "audit entries",
                "ordering": ["sequence"],
                "indexes": [models.Index(fields=["object_type", "object_id"], name="audit_object")],
            },
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sequence", models.PositiveBigIntegerField(help_text="the newest entry's sequence when signed")),
                ("entry_hash", models.CharField(max_length=64)),
                ("signed_at", models.DateTimeField()),
                ("key_id", models.CharField(help_text="which of GATEWAY_AUDIT_KEYS signed it", max_length=16)),
                ("signature", models.CharField(max_length=64)),
            ],
            options={"ordering": ["signed_at", "id"]},
        ),
        migrations.RunSQL(
            APPEND_ONLY
            + TRIGGERS.format(table="support_auditentry")
            + TRIGGERS.format(table="support_auditcheckpoint"),
            DROP_TRIGGERS.format(table="support_auditentry")
            + DROP_TRIGGERS.format(table="support_auditcheckpoint")
            + "DROP FUNCTION support_audit_append_only();",
        ),
    ]

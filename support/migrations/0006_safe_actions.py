"""Safe actions on payments: a case escalated to a lead (when, by whom), and the overpayment decisions,
which finance, the roles that work cases and the auditor may view."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


VIEWERS = ("support_agent", "support_lead", "finance", "auditor")


def decision_views_grant(apps, schema_editor):
    """Also run by the tests after a flush (schema_editor None, the project's own app registry)."""
    from django.contrib.auth.management import create_permissions

    using = schema_editor.connection.alias if schema_editor else "default"
    config = apps.get_app_config("support")
    stub = not getattr(config, "models_module", None)
    if stub:
        config.models_module = True
    create_permissions(config, apps=apps, verbosity=0, using=using)
    if stub:
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.get(content_type__app_label="support", codename="view_overpaymentdecision")
    for group in Group.objects.filter(name__in=VIEWERS):
        group.permissions.add(view)


def decision_views_revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for view in Permission.objects.filter(content_type__app_label="support", codename="view_overpaymentdecision"):
        for group in Group.objects.filter(name__in=VIEWERS):
            group.permissions.remove(view)


class Migration(migrations.Migration):

    dependencies = [
        ('payments', '0014_resolution_until_role'),
        ('support', '0005_roles_approvals'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='supportcase',
            name='escalated_at',
            field=models.DateTimeField(blank=True, help_text='when an agent handed it to a lead', null=True),
        ),
        migrations.AddField(
            model_name='supportcase',
            name='escalated_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='escalated_cases', to=settings.AUTH_USER_MODEL),
        ),
        migrations.CreateModel(
            name='OverpaymentDecision',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('decision', models.CharField(choices=[('keep', 'keep the excess'), ('refund', 'refund the excess')], max_length=16)),
                ('excess_base_units', models.DecimalField(decimal_places=0, help_text='confirmed funds minus the amount due, when decided', max_digits=78)),
                ('reason', models.TextField()),
                ('decided_at', models.DateTimeField()),
                ('superseded_at', models.DateTimeField(blank=True, null=True)),
                ('actor', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='overpayment_decisions', to=settings.AUTH_USER_MODEL)),
                ('intent', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='overpayment_decisions', to='payments.paymentintent')),
                ('merchant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='overpayment_decisions', to='payments.merchant')),
            ],
            options={
                'ordering': ['decided_at', 'id'],
                'constraints': [models.UniqueConstraint(condition=models.Q(('superseded_at__isnull', True)), fields=('intent',), name='one_current_overpayment_decision'), models.CheckConstraint(condition=models.Q(('reason', ''), _negated=True), name='overpayment_decision_has_a_reason')],
            },
        ),
        migrations.RunPython(decision_views_grant, decision_views_revoke),
    ]

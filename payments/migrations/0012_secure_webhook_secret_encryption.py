"""Webhook signing secrets encrypted at rest: each plaintext `secret` becomes a Fernet token in
`secret_encrypted` under the first key of GATEWAY_SECRETS_KEYS (which the settings require outside
DEBUG). Reversible: going back decrypts with any configured key. The Fernet calls are written out here,
not imported from the app, so that later changes to the app cannot change what this migration did."""

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import migrations, models


def _keys() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.GATEWAY_SECRETS_KEYS])


def encrypt(apps, schema_editor):
    WebhookSecret = apps.get_model("payments", "WebhookSecret")
    keys = _keys()
    for row in WebhookSecret.objects.only("id", "secret").iterator():
        row.secret_encrypted = keys.encrypt(row.secret.encode()).decode()
        row.save(update_fields=["secret_encrypted"])


def decrypt(apps, schema_editor):
    WebhookSecret = apps.get_model("payments", "WebhookSecret")
    keys = _keys()
    for row in WebhookSecret.objects.only("id", "secret_encrypted").iterator():
        row.secret = keys.decrypt(row.secret_encrypted.encode()).decode()
        row.save(update_fields=["secret"])


class Migration(migrations.Migration):

    dependencies = [
        ('payments', '0011_scan_network_scan_status'),
    ]

    operations = [
        migrations.AddField(
            model_name='webhooksecret',
            name='secret_encrypted',
            field=models.TextField(default='', help_text='Fernet token of the whsec_ secret'),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt, decrypt),
        # with a default, so that going back can add the column to existing rows before decrypting
        migrations.AlterField(
            model_name='webhooksecret',
            name='secret',
            field=models.CharField(default='', max_length=100),
        ),
        migrations.RemoveField(
            model_name='webhooksecret',
            name='secret',
        ),
    ]

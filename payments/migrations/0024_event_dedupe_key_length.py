"""Events' dedupe keys up to 160 characters: an exception's key names its network, transaction and output,
and a Litecoin duplicate payment's ("duplicate_payment:litecoin-regtest/<64 hex>/1") was 101 characters,
which failed the scan of the whole network. Widening a varchar is a catalogue change in PostgreSQL (no
table rewrite, no index rebuild)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0023_scan_status_success"),
    ]

    operations = [
        migrations.AlterField(
            model_name="event",
            name="dedupe_key",
            field=models.CharField(max_length=160),
        ),
    ]

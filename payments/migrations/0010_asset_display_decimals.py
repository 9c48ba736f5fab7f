"""Per-asset display precision: amounts due quoted from fiat prices are rounded up to it (issue 11, item 19).

Seeded assets get the precision people and wallets use for them: 8 decimals for BTC, LTC, ETH and POL,
6 for the USD stablecoins (their decimals). Each quote records the precision its amount was rounded to.
"""

from django.db import migrations, models

DISPLAY_DECIMALS = {"BTC": 8, "LTC": 8, "ETH": 8, "POL": 8, "USDC": 6, "USDT": 6}


def seed_display_decimals(apps, schema_editor):
    Asset = apps.get_model("payments", "Asset")
    for code, places in DISPLAY_DECIMALS.items():
        Asset.objects.filter(code=code).update(display_decimals=places)


class Migration(migrations.Migration):
    dependencies = [("payments", "0009_wallets_key_fingerprint")]

    operations = [
        migrations.AddField(
            model_name="asset",
            name="display_decimals",
            field=models.PositiveSmallIntegerField(
                default=8,
                help_text=(
                    "decimals an amount due quoted from a fiat price is rounded up to (at most the asset's "
                    "decimals on its network), e.g. 8 for BTC/ETH, 6 for USDC"
                ),
            ),
        ),
        migrations.AddField(
            model_name="quote",
            name="rounded_to_decimals",
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(seed_display_decimals, migrations.RunPython.noop),
    ]

"""Test and development networks (testnets, regtest, the local anvil chain) start disabled unless an
operator has already given them a node: a fresh production database offers none of them. The demo and
the tests enable what they use."""

from django.db import migrations


def disable_unwatched_testnets(apps, schema_editor):
    Network = apps.get_model("payments", "Network")
    Network.objects.filter(is_testnet=True, rpc_url="").update(enabled=False)


class Migration(migrations.Migration):
    dependencies = [("payments", "0007_checkout_origins")]

    operations = [migrations.RunPython(disable_unwatched_testnets, migrations.RunPython.noop)]

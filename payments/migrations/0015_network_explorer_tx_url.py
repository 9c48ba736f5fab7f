"""A block explorer per network, so that the payment page links each transaction to a page anyone can
check. Filled for the public networks the gateway knows out of the box; local chains (regtest, anvil)
have no public explorer and stay blank. An operator's own value is never overwritten."""

from django.db import migrations, models

import payments.models.reference

EXPLORERS = {
    "bitcoin": "https://mempool.space/tx/{tx}",
    "bitcoin-testnet": "https://mempool.space/testnet/tx/{tx}",
    "litecoin": "https://litecoinspace.org/tx/{tx}",
    "litecoin-testnet": "https://litecoinspace.org/testnet/tx/{tx}",
    "ethereum": "https://etherscan.io/tx/{tx}",
    "polygon": "https://polygonscan.com/tx/{tx}",
    "base": "https://basescan.org/tx/{tx}",
    "arbitrum": "https://arbiscan.io/tx/{tx}",
}


def fill(apps, schema_editor):
    Network = apps.get_model("payments", "Network")
    for code, url in EXPLORERS.items():
        Network.objects.filter(code=code, explorer_tx_url="").update(explorer_tx_url=url)


class Migration(migrations.Migration):
    dependencies = [("payments", "0014_resolution_until_role")]

    operations = [
        migrations.AddField(
            model_name="network",
            name="explorer_tx_url",
            field=models.CharField(
                blank=True,
                help_text="https URL of a transaction's page, {tx} for its hash; empty: transactions are not linked",
                max_length=300,
                validators=[payments.models.reference.explorer_tx_url_validate],
                verbose_name="block explorer (transaction URL)",
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]

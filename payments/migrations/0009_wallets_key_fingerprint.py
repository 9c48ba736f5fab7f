"""Wallets remember their key material (a fingerprint that is the same for xpub, zpub, vpub ... spellings)
and the address space they derive into; one key serves one active wallet per address space.

Existing rows are backfilled. Active wallets that already share a key in one address space (the defect:
all but one of them failed every create) keep only the one that derived the most addresses active; the
others are deactivated, never deleted, and each later wallet with the key continues after them."""

import hashlib

from bip_utils import Base58Decoder
from django.db import migrations, models


def backfill(apps, schema_editor):
    Wallet = apps.get_model("payments", "Wallet")
    kept = {}
    for wallet in Wallet.objects.select_related("network").order_by("-next_index", "id"):
        # Bytes 13..78 of the 78-byte payload: chain code and public key (the same as
        # payments.wallets.key_material_fingerprint, repeated here so that the migration stays fixed).
        wallet.key_fingerprint = hashlib.sha256(Base58Decoder.CheckDecode(wallet.account_key)[13:]).hexdigest()
        wallet.address_space = "evm" if wallet.chain == "evm" else wallet.network.bech32_hrp
        space = (wallet.key_fingerprint, wallet.address_space)
        if wallet.is_active and space in kept:
            wallet.is_active = False
        elif wallet.is_active:
            kept[space] = wallet.pk
        wallet.save(update_fields=["key_fingerprint", "address_space", "is_active"])


class Migration(migrations.Migration):

    dependencies = [
        ("payments", "0008_testnets_start_disabled"),
    ]

    operations = [
        migrations.AddField(
            model_name="wallet",
            name="key_fingerprint",
            field=models.CharField(
                default="",
                editable=False,
                help_text="sha256 of the key's chain code and public key: the same whatever prefix it is written with",
                max_length=64,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="wallet",
            name="address_space",
            field=models.CharField(
                default="",
                editable=False,
                help_text="'evm', or the network's bech32 HRP: one key derives the same addresses where this is equal",
                max_length=16,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="wallet",
            constraint=models.UniqueConstraint(
                condition=models.Q(("is_active", True)),
                fields=("key_fingerprint", "address_space"),
                name="wallet_key_active_unique",
            ),
        ),
    ]

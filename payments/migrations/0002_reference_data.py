"""Assets and networks the gateway knows out of the box (editable in the admin afterwards)."""

from django.db import migrations

NETWORKS = [
    # code, name, chain, chain_id, hrp, testnet, scheme
    ("bitcoin", "Bitcoin", "bitcoin", None, "bc", False, "bitcoin"),
    ("bitcoin-testnet", "Bitcoin testnet", "bitcoin", None, "tb", True, "bitcoin"),
    ("bitcoin-regtest", "Bitcoin regtest", "bitcoin", None, "bcrt", True, "bitcoin"),
    ("litecoin", "Litecoin", "litecoin", None, "ltc", False, "litecoin"),
    ("litecoin-testnet", "Litecoin testnet", "litecoin", None, "tltc", True, "litecoin"),
    ("litecoin-regtest", "Litecoin regtest", "litecoin", None, "rltc", True, "litecoin"),
    ("ethereum", "Ethereum", "evm", 1, "", False, "ethereum"),
    ("polygon", "Polygon PoS", "evm", 137, "", False, "ethereum"),
    ("base", "Base", "evm", 8453, "", False, "ethereum"),
    ("arbitrum", "Arbitrum One", "evm", 42161, "", False, "ethereum"),
    ("evm-local", "Local development chain (anvil)", "evm", 31337, "", True, "ethereum"),
]

ASSETS = [
    ("BTC", "Bitcoin", ""),
    ("LTC", "Litecoin", ""),
    ("ETH", "Ether", ""),
    ("POL", "Polygon Ecosystem Token", ""),
    ("USDC", "USD Coin", "USD"),
    ("USDT", "Tether USD", "USD"),
]

NETWORK_ASSETS = [
    # network, asset, contract, decimals, confirmations
    ("bitcoin", "BTC", "", 8, 2),
    ("bitcoin-testnet", "BTC", "", 8, 2),
    ("bitcoin-regtest", "BTC", "", 8, 2),
    ("litecoin", "LTC", "", 8, 6),
    ("litecoin-testnet", "LTC", "", 8, 6),
    ("litecoin-regtest", "LTC", "", 8, 6),
    ("ethereum", "ETH", "", 18, 12),
    ("ethereum", "USDC", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", 6, 12),
    ("ethereum", "USDT", "0xdac17f958d2ee523a2206206994597c13d831ec7", 6, 12),
    ("polygon", "POL", "", 18, 64),
    ("polygon", "USDC", "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359", 6, 64),
    ("polygon", "USDT", "0xc2132d05d31c914a87c6611c10748aeb04b58e8f", 6, 64),
    ("base", "ETH", "", 18, 12),
    ("base", "USDC", "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", 6, 12),
    ("arbitrum", "ETH", "", 18, 12),
    ("arbitrum", "USDC", "0xaf88d065e77c8cc2239327c5edb3a432268e5831", 6, 12),
    ("arbitrum", "USDT", "0xfd086bc7cd5c481dcc9c85ebe478a1c0b69fcbb9", 6, 12),
    ("evm-local", "ETH", "", 18, 2),
]


def seed(apps, schema_editor):
    Network = apps.get_model("payments", "Network")
    Asset = apps.get_model("payments", "Asset")
    NetworkAsset = apps.get_model("payments", "NetworkAsset")
    networks = {}
    for code, name, chain, chain_id, hrp, testnet, scheme in NETWORKS:
        networks[code], _ = Network.objects.get_or_create(
            code=code,
            defaults={"name": name, "chain": chain, "chain_id": chain_id, "bech32_hrp": hrp,
                      "is_testnet": testnet, "uri_scheme": scheme},
        )
    assets = {}
    for code, name, peg in ASSETS:
        assets[code], _ = Asset.objects.get_or_create(code=code, defaults={"name": name, "peg_currency": peg})
    for network, asset, contract, decimals, confirmations in NETWORK_ASSETS:
        NetworkAsset.objects.get_or_create(
            network=networks[network],
            asset=assets[asset],
            defaults={"contract_address": contract, "decimals": decimals,
                      "default_confirmations": confirmations},
        )


def unseed(apps, schema_editor):
    apps.get_model("payments", "NetworkAsset").objects.all().delete()
    apps.get_model("payments", "Network").objects.filter(code__in=[n[0] for n in NETWORKS]).delete()
    apps.get_model("payments", "Asset").objects.filter(code__in=[a[0] for a in ASSETS]).delete()


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]

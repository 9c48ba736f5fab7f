"""The merchant's wallet in tests: private keys of the published BIP39 test mnemonic ("abandon" x 11 +
"about"), derived here with bip-utils from the seed (the gateway only ever holds the account's public
key), so a test can move money out of the gateway's payment addresses as a merchant's wallet would:
sign EVM transactions with eth-account, import keys into the litecoind regtest wallet; and the account
public keys the gateway is given. Nothing here needs Django."""

from __future__ import annotations

from functools import lru_cache

from bip_utils import Bip32KeyNetVersions, Bip32Secp256k1, Bip39SeedGenerator, WifEncoder
from eth_account import Account

TEST_MNEMONIC = "abandon " * 11 + "about"

LITECOIN_TESTNET_WIF_VERSION = b"\xef"  # Litecoin Core chainparams: testnet/regtest SECRET_KEY prefix 239


@lru_cache
def account_key(path: str, *, testnet: bool = False) -> str:
    """The account public key at `path` of the test mnemonic, as tpub (testnet) or xpub."""
    versions = (
        Bip32KeyNetVersions(bytes.fromhex("043587cf"), bytes.fromhex("04358394"))
        if testnet
        else Bip32KeyNetVersions(bytes.fromhex("0488b21e"), bytes.fromhex("0488ade4"))
    )
    seed = Bip39SeedGenerator(TEST_MNEMONIC).Generate()
    return Bip32Secp256k1.FromSeed(seed, versions).DerivePath(path).PublicKey().ToExtended()


def _private_key(path: str) -> bytes:
    seed = Bip39SeedGenerator(TEST_MNEMONIC).Generate()
    return Bip32Secp256k1.FromSeed(seed).DerivePath(path).PrivateKey().Raw().ToBytes()


def evm_account(index: int, *, account: int = 0):
    """The eth-account signer of the EVM payment address at m/44'/60'/account'/0/index."""
    return Account.from_key(_private_key(f"m/44'/60'/{account}'/0/{index}"))


def litecoin_regtest_wif(index: int, *, account: int = 0, change: int = 0) -> str:
    """The WIF private key of the litecoin-regtest payment address at m/84'/1'/account'/change/index."""
    key = _private_key(f"m/84'/1'/{account}'/{change}/{index}")
    return WifEncoder.Encode(key, net_ver=LITECOIN_TESTNET_WIF_VERSION)

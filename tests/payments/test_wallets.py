"""Watch-only derivation (payments/wallets.py) against published vectors and an independent derivation
from the test mnemonic's private path; key validation codes; wallet registration (payments/accounts.py).

Private keys appear only here, to produce vectors: the code under test sees public keys alone."""

from __future__ import annotations

from functools import lru_cache

import pytest
from bip_utils import (
    Base58Decoder,
    Base58Encoder,
    Bip32KeyNetVersions,
    Bip32Secp256k1,
    Bip39SeedGenerator,
    Bip44,
    Bip44Changes,
    Bip44Coins,
    Bip84,
    Bip84Coins,
    SegwitBech32Decoder,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.accounts import wallet_add
from payments.errors import Conflict, InvalidExtendedKey, InvalidRequest, NotFound
from payments.models import Wallet
from payments.wallets import derive_bech32_address, derive_evm_address, parse_account_key
from tests.factories import (
    BIP84_FIRST_ADDRESS,
    BIP84_ZPUB,
    ETH_ACCOUNT_XPUB,
    ETH_FIRST_ADDRESS,
    TEST_MNEMONIC,
    account_key,
    make_merchant,
)

# BIP84 spec (github.com/bitcoin/bips/blob/master/bip-0084.mediawiki), m/84'/0'/0'/0/1; also checked
# against the private-path derivation below.
BIP84_SECOND_ADDRESS = "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"

VERSIONS = {
    "xpub": "0488b21e",
    "zpub": "04b24746",
    "ypub": "049d7cb2",
    "tpub": "043587cf",
    "vpub": "045f1c74",
    "xprv": "0488ade4",
    "zprv": "04b2430c",
}


@lru_cache
def seed() -> bytes:
    return Bip39SeedGenerator(TEST_MNEMONIC).Generate()


def with_version(extended_key: str, prefix: str) -> str:
    """The same key material under another version prefix (xpub <-> zpub <-> ypub, tpub <-> vpub)."""
    raw = Base58Decoder.CheckDecode(extended_key)
    return Base58Encoder.CheckEncode(bytes.fromhex(VERSIONS[prefix]) + raw[4:])


def private_bip84_address(coin: Bip84Coins, index: int) -> str:
    """Independent vector: the receive address from the mnemonic's private path m/84'/coin'/0'/0/index."""
    account = Bip84.FromSeed(seed(), coin).Purpose().Coin().Account(0)
    return account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(index).PublicKey().ToAddress()


def private_eth_address(index: int) -> str:
    account = Bip44.FromSeed(seed(), Bip44Coins.ETHEREUM).Purpose().Coin().Account(0)
    return account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(index).PublicKey().ToAddress()


def witness_program(address: str, hrp: str) -> bytes:
    version, program = SegwitBech32Decoder.Decode(hrp, address)
    assert version == 0
    return program


def private_extended_key(path: str, version_prefix: str) -> str:
    versions = Bip32KeyNetVersions(bytes.fromhex(VERSIONS["xpub"]), bytes.fromhex(VERSIONS[version_prefix]))
    return Bip32Secp256k1.FromSeed(seed(), versions).DerivePath(path).PrivateKey().ToExtended()


# --- published vectors -----------------------------------------------------------------------------


def test_factory_vectors_are_the_published_ones():
    assert BIP84_FIRST_ADDRESS == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    assert ETH_FIRST_ADDRESS == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
    # The zpub is m/84'/0'/0' of the mnemonic, and index 1 is what the BIP84 spec says it is.
    assert Bip84.FromSeed(seed(), Bip84Coins.BITCOIN).Purpose().Coin().Account(
        0
    ).PublicKey().ToExtended() == (BIP84_ZPUB)
    assert private_bip84_address(Bip84Coins.BITCOIN, 0) == BIP84_FIRST_ADDRESS
    assert private_bip84_address(Bip84Coins.BITCOIN, 1) == BIP84_SECOND_ADDRESS
    assert private_eth_address(0) == ETH_FIRST_ADDRESS


def test_bip84_zpub_derives_published_addresses():
    key = parse_account_key(BIP84_ZPUB)
    assert key.version.prefix == "zpub" and key.mainnet
    assert derive_bech32_address(key, 0, "bc") == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    assert derive_bech32_address(key, 1, "bc") == "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"


def test_eth_account_xpub_derives_published_address():
    key = parse_account_key(ETH_ACCOUNT_XPUB)
    assert key.version.prefix == "xpub" and key.mainnet
    assert derive_evm_address(key, 0) == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"


def test_surrounding_whitespace_is_ignored():
    key = parse_account_key(f"  {BIP84_ZPUB}\n")
    assert key.text == BIP84_ZPUB
    assert derive_bech32_address(key, 0, "bc") == BIP84_FIRST_ADDRESS


# --- version prefixes ------------------------------------------------------------------------------


def test_same_account_as_xpub_or_zpub_derives_same_addresses():
    as_xpub = account_key("m/84'/0'/0'")
    assert as_xpub.startswith("xpub") and as_xpub == with_version(BIP84_ZPUB, "xpub")
    xpub_key, zpub_key = parse_account_key(as_xpub), parse_account_key(BIP84_ZPUB)
    assert xpub_key.version.prefix == "xpub" and zpub_key.version.prefix == "zpub"
    for index in (0, 1, 2, 17, 1000):
        expected = private_bip84_address(Bip84Coins.BITCOIN, index)
        assert derive_bech32_address(xpub_key, index, "bc") == expected
        assert derive_bech32_address(zpub_key, index, "bc") == expected


@pytest.mark.parametrize("prefix", ["tpub", "vpub"])
def test_testnet_account_key_derives_with_the_given_hrp(prefix):
    tpub = account_key("m/84'/1'/0'", testnet=True)
    assert tpub.startswith("tpub")
    key = parse_account_key(with_version(tpub, prefix))
    assert key.version.prefix == prefix and not key.mainnet
    for index in (0, 1, 5, 99, 2**31 - 1):
        testnet = derive_bech32_address(key, index, "tb")
        regtest = derive_bech32_address(key, index, "bcrt")
        ltc_regtest = derive_bech32_address(key, index, "rltc")
        assert testnet == private_bip84_address(Bip84Coins.BITCOIN_TESTNET, index)
        assert regtest == private_bip84_address(Bip84Coins.BITCOIN_REGTEST, index)
        assert (
            testnet.startswith("tb1q") and regtest.startswith("bcrt1q") and ltc_regtest.startswith("rltc1q")
        )
        # Same key hash behind every HRP.
        program = witness_program(testnet, "tb")
        assert len(program) == 20
        assert witness_program(regtest, "bcrt") == program
        assert witness_program(ltc_regtest, "rltc") == program


def test_index_out_of_range_is_refused():
    key = parse_account_key(BIP84_ZPUB)
    for index in (-1, 2**31):
        with pytest.raises(ValueError):
            derive_bech32_address(key, index, "bc")
        with pytest.raises(ValueError):
            derive_evm_address(parse_account_key(ETH_ACCOUNT_XPUB), index)


# --- rejections ------------------------------------------------------------------------------------


def _bad_checksum(text: str) -> str:
    return text[:-1] + ("u" if text[-1] != "u" else "v")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        None,
        "hello",
        "0OIl",  # not base58
        "1111",
        _bad_checksum(BIP84_ZPUB),
        BIP84_ZPUB[:-4],
        BIP84_FIRST_ADDRESS,
        ETH_FIRST_ADDRESS,
        # valid base58check, wrong length
        Base58Encoder.CheckEncode(b"\x04\xb2\x47\x46" + b"\x00" * 40),
        # right length, unknown version bytes
        Base58Encoder.CheckEncode(b"\xde\xad\xbe\xef" + Base58Decoder.CheckDecode(BIP84_ZPUB)[4:]),
        # right version and length, key data not a point on the curve
        Base58Encoder.CheckEncode(Base58Decoder.CheckDecode(BIP84_ZPUB)[:45] + b"\x02" + b"\xff" * 32),
    ],
)
def test_garbage_is_invalid_xpub(text):
    with pytest.raises(InvalidExtendedKey) as exc:
        parse_account_key(text)
    assert exc.value.code == "invalid_xpub"
    assert exc.value.http_status == 400


@pytest.mark.parametrize("private", ["xprv", "zprv"])
def test_private_keys_are_rejected(private):
    text = private_extended_key("m/84'/0'/0'", private)
    assert text.startswith(private)
    with pytest.raises(InvalidExtendedKey) as exc:
        parse_account_key(text)
    assert exc.value.code == "private_key_rejected"
    assert text not in exc.value.message


def test_ypub_is_unsupported():
    ypub = with_version(BIP84_ZPUB, "ypub")
    assert ypub.startswith("ypub")
    with pytest.raises(InvalidExtendedKey) as exc:
        parse_account_key(ypub)
    assert exc.value.code == "unsupported_xpub_type"


@pytest.mark.parametrize("path", ["m", "m/84'/0'", "m/84'/0'/0'/0"])
def test_keys_not_at_account_depth_are_rejected(path):
    text = account_key(path)
    with pytest.raises(InvalidExtendedKey) as exc:
        parse_account_key(text)
    assert exc.value.code == "xpub_not_account_level"


# --- property: EVM public derivation == private path -----------------------------------------------


@settings(max_examples=25, deadline=None)
@given(index=st.integers(min_value=0, max_value=2**31 - 1))
def test_evm_public_derivation_matches_private_path(index):
    key = parse_account_key(ETH_ACCOUNT_XPUB)
    assert derive_evm_address(key, index) == private_eth_address(index)


# --- wallet_add ------------------------------------------------------------------------------------


@pytest.fixture
def bare_merchant(db):
    return make_merchant("Wallet shop", wallets=False)


def test_wallet_add_registers_each_chain(bare_merchant):
    evm = wallet_add(merchant=bare_merchant, chain="evm", account_key=ETH_ACCOUNT_XPUB)
    btc = wallet_add(merchant=bare_merchant, chain="bitcoin", account_key=f" {BIP84_ZPUB} ")
    ltc = wallet_add(
        merchant=bare_merchant,
        chain="litecoin",
        account_key=account_key("m/84'/1'/0'", testnet=True),
        network_code="litecoin-regtest",
    )
    assert evm.network is None
    assert btc.network.code == "bitcoin" and btc.account_key == BIP84_ZPUB
    assert ltc.network.code == "litecoin-regtest"
    assert Wallet.objects.filter(merchant=bare_merchant, is_active=True).count() == 3


def test_wallet_add_mainnet_key_for_regtest_is_network_mismatch(bare_merchant):
    with pytest.raises(InvalidRequest) as exc:
        wallet_add(
            merchant=bare_merchant, chain="litecoin", account_key=BIP84_ZPUB, network_code="litecoin-regtest"
        )
    assert exc.value.code == "xpub_network_mismatch"
    with pytest.raises(InvalidRequest) as exc:
        wallet_add(
            merchant=bare_merchant,
            chain="bitcoin",
            account_key=account_key("m/84'/1'/0'", testnet=True),
            network_code="bitcoin",
        )
    assert exc.value.code == "xpub_network_mismatch"
    assert not Wallet.objects.filter(merchant=bare_merchant).exists()


def test_wallet_add_unknown_network(bare_merchant):
    with pytest.raises(NotFound) as exc:
        wallet_add(merchant=bare_merchant, chain="bitcoin", account_key=BIP84_ZPUB, network_code="dogecoin")
    assert exc.value.code == "unknown_network"


def test_wallet_add_network_of_another_chain(bare_merchant):
    with pytest.raises(InvalidRequest) as exc:
        wallet_add(merchant=bare_merchant, chain="bitcoin", account_key=BIP84_ZPUB, network_code="litecoin")
    assert exc.value.code == "network_chain_mismatch"


def test_wallet_add_unknown_chain(bare_merchant):
    with pytest.raises(InvalidRequest) as exc:
        wallet_add(merchant=bare_merchant, chain="solana", account_key=BIP84_ZPUB)
    assert exc.value.code == "unknown_chain"


def test_second_active_wallet_for_same_chain_and_network_conflicts(bare_merchant):
    wallet_add(merchant=bare_merchant, chain="bitcoin", account_key=BIP84_ZPUB, network_code="bitcoin")
    wallet_add(merchant=bare_merchant, chain="evm", account_key=ETH_ACCOUNT_XPUB)
    with pytest.raises(Conflict) as exc:
        wallet_add(
            merchant=bare_merchant,
            chain="bitcoin",
            account_key=account_key("m/84'/0'/1'"),
            network_code="bitcoin",
        )
    assert exc.value.code == "wallet_exists"
    with pytest.raises(Conflict) as exc:  # EVM wallets have no network: NULLs must not be distinct
        wallet_add(merchant=bare_merchant, chain="evm", account_key=account_key("m/44'/60'/1'"))
    assert exc.value.code == "wallet_exists"
    # Another network of the same chain is fine.
    wallet_add(
        merchant=bare_merchant,
        chain="bitcoin",
        account_key=account_key("m/84'/1'/0'", testnet=True),
        network_code="bitcoin-testnet",
    )
    assert Wallet.objects.filter(merchant=bare_merchant).count() == 3


def test_evm_wallet_with_zpub_is_invalid_xpub(bare_merchant):
    with pytest.raises(InvalidRequest) as exc:
        wallet_add(merchant=bare_merchant, chain="evm", account_key=BIP84_ZPUB)
    assert exc.value.code == "invalid_xpub"
    with pytest.raises(InvalidRequest) as exc:  # a testnet key for EVM too
        wallet_add(merchant=bare_merchant, chain="evm", account_key=account_key("m/44'/60'/0'", testnet=True))
    assert exc.value.code == "invalid_xpub"
    assert not Wallet.objects.filter(merchant=bare_merchant).exists()


def test_wallet_add_private_key_is_rejected_before_storage(bare_merchant):
    with pytest.raises(InvalidExtendedKey) as exc:
        wallet_add(
            merchant=bare_merchant,
            chain="bitcoin",
            account_key=private_extended_key("m/84'/0'/0'", "zprv"),
            network_code="bitcoin",
        )
    assert exc.value.code == "private_key_rejected"
    assert not Wallet.objects.filter(merchant=bare_merchant).exists()

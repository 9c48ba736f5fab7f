"""Watch-only derivation (payments/wallets.py) against published vectors and an independent derivation
from the test mnemonic's private path; key validation codes; wallet registration (payments/accounts.py).

Private keys appear only here, to produce vectors: the code under test sees public keys alone."""

from __future__ import annotations

import io
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
from django.core.management import call_command
from django.utils import timezone
from embit import script as embit_script
from embit.base58 import decode_check as embit_decode_check
from embit.base58 import encode_check as embit_encode_check
from embit.bip32 import HDKey as EmbitHDKey
from embit.networks import NETWORKS as EMBIT_NETWORKS
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from payments import services, wallets
from payments.accounts import wallet_add
from payments.errors import Conflict, InvalidExtendedKey, InvalidRequest, NotFound
from payments.models import Network, PaymentAddress, Wallet
from payments.wallets import derive_bech32_address, derive_evm_address, parse_account_key
from tests.factories import (
    BIP84_FIRST_ADDRESS,
    BIP84_ZPUB,
    ETH_ACCOUNT_XPUB,
    ETH_FIRST_ADDRESS,
    TEST_MNEMONIC,
    account_key,
    make_api_key,
    make_merchant,
)

# BIP84 spec (github.com/bitcoin/bips/blob/master/bip-0084.mediawiki), m/84'/0'/0'/0/1; also checked
# against the private-path derivation below.
BIP84_SECOND_ADDRESS = "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"

# SLIP-132, "Registered HD version bytes for BIP-0032" (github.com/satoshilabs/slips/blob/master/slip-0132.md),
# transcribed from the registry's table: prefix -> (public version, private prefix, private version,
# network, address encoding). Never from payments/wallets.py.
SLIP132 = {
    "xpub": ("0488b21e", "xprv", "0488ade4", "bitcoin", "mainnet", "P2PKH or P2SH"),
    "ypub": ("049d7cb2", "yprv", "049d7878", "bitcoin", "mainnet", "P2WPKH in P2SH"),
    "zpub": ("04b24746", "zprv", "04b2430c", "bitcoin", "mainnet", "P2WPKH"),
    "tpub": ("043587cf", "tprv", "04358394", "bitcoin", "testnet", "P2PKH or P2SH"),
    "upub": ("044a5262", "uprv", "044a4e28", "bitcoin", "testnet", "P2WPKH in P2SH"),
    "vpub": ("045f1cf6", "vprv", "045f18bc", "bitcoin", "testnet", "P2WPKH"),
    "Ltub": ("019da462", "Ltpv", "019d9cfe", "litecoin", "mainnet", "P2PKH or P2SH"),
    "Mtub": ("01b26ef6", "Mtpv", "01b26792", "litecoin", "mainnet", "P2WPKH in P2SH"),
    "ttub": ("0436f6e1", "ttpv", "0436ef7d", "litecoin", "testnet", "P2PKH or P2SH"),
}
VERSIONS = {prefix: row[0] for prefix, row in SLIP132.items()} | {row[1]: row[2] for row in SLIP132.values()}
# SLIP-173, "Registered human-readable parts for BIP-0173" (github.com/satoshilabs/slips/blob/master/slip-0173.md).
SLIP173_HRP = {
    "bitcoin": "bc",
    "bitcoin-testnet": "tb",
    "bitcoin-regtest": "bcrt",
    "litecoin": "ltc",
    "litecoin-testnet": "tltc",
    "litecoin-regtest": "rltc",
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


def test_receive_and_change_chains_of_several_keys_interleaved_derive_their_own_addresses():
    """Each key's chain nodes are derived once and kept (a pool refill derives many indexes of one
    chain): interleaving two keys and both chains must still give each the addresses of its own private
    path, m/84'/0'/0'/0/i, m/84'/0'/0'/1/i and m/44'/60'/0'/0/i of the mnemonic."""
    zpub, xpub = parse_account_key(BIP84_ZPUB), parse_account_key(ETH_ACCOUNT_XPUB)
    account = Bip84.FromSeed(seed(), Bip84Coins.BITCOIN).Purpose().Coin().Account(0)
    for index in (0, 1, 7):
        internal = account.Change(Bip44Changes.CHAIN_INT).AddressIndex(index).PublicKey().ToAddress()
        assert derive_bech32_address(zpub, index, "bc", change=1) == internal
        assert derive_evm_address(xpub, index) == private_eth_address(index)
        assert derive_bech32_address(zpub, index, "bc") == private_bip84_address(Bip84Coins.BITCOIN, index)
        assert internal != private_bip84_address(Bip84Coins.BITCOIN, index)


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


# --- SLIP-132: every version the code knows, against the registry ---------------------------------


@pytest.mark.parametrize("prefix", sorted(VERSIONS))
def test_slip132_version_bytes_render_as_their_prefix(prefix):
    """A 78-byte extended key written with these version bytes starts with the prefix whatever its payload
    (both ends of the payload range; embit's Base58Check, not the library our code uses)."""
    version = bytes.fromhex(VERSIONS[prefix])
    for payload in (bytes(74), b"\xff" * 74):
        assert embit_encode_check(version + payload)[:4] == prefix


def test_slip132_bitcoin_versions_agree_with_embit():
    # embit names versions by script type per network: its test network "zpub" is SLIP-132's vpub.
    main, test = EMBIT_NETWORKS["main"], EMBIT_NETWORKS["test"]
    assert [main[p].hex() for p in ("xpub", "ypub", "zpub", "xprv", "yprv", "zprv")] == [
        VERSIONS[p] for p in ("xpub", "ypub", "zpub", "xprv", "yprv", "zprv")
    ]
    assert [test[p].hex() for p in ("xpub", "ypub", "zpub", "xprv", "yprv", "zprv")] == [
        VERSIONS[p] for p in ("tpub", "upub", "vpub", "tprv", "uprv", "vprv")
    ]


def test_every_version_the_code_knows_is_the_registrys():
    known = {v.prefix: v for v in wallets._PUBLIC_VERSIONS}
    assert set(known) == set(SLIP132)
    for prefix, (public, _, _, coin, network, encoding) in SLIP132.items():
        version = known[prefix]
        assert version.public.hex() == public, prefix
        assert version.mainnet == (network == "mainnet"), prefix
        # Bitcoin's versions are the generic ones (Electrum and Litecoin Core write Litecoin keys with
        # them too); a coin's own versions serve that coin only.
        assert version.chain == (None if coin == "bitcoin" else coin), prefix
        assert version.supported == (encoding != "P2WPKH in P2SH"), prefix
    assert {v.hex() for v in wallets._PRIVATE_VERSIONS} == {row[2] for row in SLIP132.values()}


def account_path(prefix: str) -> str:
    """The BIP84 account of the test mnemonic a key with this prefix stands for (SLIP-44: 0 bitcoin, 2
    litecoin, 1 every test network)."""
    _, _, _, coin, network, _ = SLIP132[prefix]
    return "m/84'/1'/0'" if network == "testnet" else ("m/84'/2'/0'" if coin == "litecoin" else "m/84'/0'/0'")


@pytest.mark.parametrize("prefix", ["xpub", "zpub", "tpub", "vpub", "Ltub", "ttub"])
def test_native_segwit_account_keys_parse_under_their_slip132_prefix(prefix):
    text = with_version(account_key(account_path(prefix)), prefix)
    assert text.startswith(prefix)
    key = parse_account_key(text)
    assert key.version.prefix == prefix
    assert key.mainnet == (SLIP132[prefix][4] == "mainnet")


@pytest.mark.parametrize("prefix", ["ypub", "upub", "Mtub"])
def test_wrapped_segwit_keys_are_unsupported(prefix):
    text = with_version(account_key(account_path(prefix)), prefix)
    assert text.startswith(prefix)
    with pytest.raises(InvalidExtendedKey) as exc:
        parse_account_key(text)
    assert exc.value.code == "unsupported_xpub_type"


def embit_addresses(text: str, hrp: str, indexes) -> list[str]:
    """BIP84 receive addresses by embit. embit refuses Litecoin's own versions: the version changes no
    address, so it reads the key material under xpub's."""
    key = EmbitHDKey.from_string(
        embit_encode_check(bytes.fromhex(VERSIONS["xpub"]) + embit_decode_check(text)[4:])
    )
    return [embit_script.p2wpkh(key.derive([0, i]).key).address({"bech32": hrp}) for i in indexes]


# network, chain, prefix: every prefix each network accepts (mainnet xpub/zpub, Litecoin's Ltub too;
# test networks tpub/vpub, Litecoin's ttub too).
ACCEPTED = [
    ("bitcoin", "bitcoin", "xpub"),
    ("bitcoin", "bitcoin", "zpub"),
    ("bitcoin-testnet", "bitcoin", "tpub"),
    ("bitcoin-testnet", "bitcoin", "vpub"),
    ("bitcoin-regtest", "bitcoin", "vpub"),
    ("litecoin", "litecoin", "xpub"),
    ("litecoin", "litecoin", "zpub"),
    ("litecoin", "litecoin", "Ltub"),
    ("litecoin-testnet", "litecoin", "vpub"),
    ("litecoin-testnet", "litecoin", "ttub"),
    ("litecoin-regtest", "litecoin", "tpub"),
    ("litecoin-regtest", "litecoin", "vpub"),
    ("litecoin-regtest", "litecoin", "ttub"),
]


@pytest.mark.parametrize(("network_code", "chain", "prefix"), ACCEPTED)
def test_wallet_addresses_equal_embits(bare_merchant, network_code, chain, prefix):
    text = with_version(account_key(account_path(prefix)), prefix)
    wallet = wallet_add(merchant=bare_merchant, chain=chain, account_key=text, network_code=network_code)
    hrp = SLIP173_HRP[network_code]
    assert wallet.network.bech32_hrp == hrp
    services.address_pool_refill(
        merchant_id=bare_merchant.pk, network=wallet.network, now=timezone.now(), batch=25
    )
    derived = list(
        PaymentAddress.objects.filter(wallet=wallet)
        .order_by("derivation_index")
        .values_list("address", flat=True)
    )
    assert derived == embit_addresses(text, hrp, range(25))
    assert all(address.startswith(f"{hrp}1q") for address in derived)


REFUSED = [
    # (network, chain, prefix): a key of the other kind of network, or of another coin
    ("bitcoin", "bitcoin", "tpub"),
    ("bitcoin", "bitcoin", "vpub"),
    ("bitcoin", "bitcoin", "Ltub"),
    ("bitcoin-testnet", "bitcoin", "xpub"),
    ("bitcoin-testnet", "bitcoin", "zpub"),
    ("bitcoin-testnet", "bitcoin", "ttub"),
    ("bitcoin-regtest", "bitcoin", "zpub"),
    ("litecoin", "litecoin", "vpub"),
    ("litecoin", "litecoin", "ttub"),
    ("litecoin-testnet", "litecoin", "Ltub"),
    ("litecoin-regtest", "litecoin", "zpub"),
    ("litecoin-regtest", "litecoin", "Ltub"),
]


@pytest.mark.parametrize(("network_code", "chain", "prefix"), REFUSED)
def test_key_of_another_network_kind_or_coin_is_xpub_network_mismatch(
    bare_merchant, network_code, chain, prefix
):
    text = with_version(account_key(account_path(prefix)), prefix)
    with pytest.raises(InvalidRequest) as exc:
        wallet_add(merchant=bare_merchant, chain=chain, account_key=text, network_code=network_code)
    assert exc.value.code == "xpub_network_mismatch" and exc.value.http_status == 400
    assert not Wallet.objects.filter(merchant=bare_merchant).exists()


def test_add_wallet_vpub_for_litecoin_regtest_as_the_readme_shows(bare_merchant, litecoind):
    """The README's command with Electrum's testnet BIP84 key (vpub); the addresses intents get over the
    API are embit's and Litecoin Core's (which takes the same key material as a tpub)."""
    vpub = with_version(account_key("m/84'/1'/0'"), "vpub")
    out = io.StringIO()
    call_command(
        "add_wallet",
        bare_merchant.pk,
        "--chain",
        "litecoin",
        "--xpub",
        vpub,
        "--network",
        "litecoin-regtest",
        stdout=out,
    )
    assert "litecoin-regtest" in out.getvalue()
    Network.objects.filter(code="litecoin-regtest").update(rpc_url=litecoind.url, enabled=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(bare_merchant)[1]}")
    addresses = []
    for i in range(3):
        response = client.post(
            "/api/v1/payment-intents",
            {
                "amount": "0.01",
                "currency": "LTC",
                "asset": "LTC",
                "network": "litecoin-regtest",
                "merchant_order_id": f"o{i}",
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        addresses.append(response.json()["address"])
    tpub = with_version(vpub, "tpub")
    descriptor = litecoind.rpc("getdescriptorinfo", f"wpkh({tpub}/0/*)")["descriptor"]
    assert addresses == embit_addresses(vpub, "rltc", range(3))
    assert addresses == litecoind.rpc("deriveaddresses", descriptor, [0, 2])


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

"""Typed-in addresses are checked for their network. Expected values are the published test vectors of
EIP-55, BIP-173 and BIP-350, and an address a real litecoind regtest node gives."""

from __future__ import annotations

import pytest

from payments.chains.address import address_normalize
from payments.errors import InvalidRequest

EIP55_VALID = [  # EIP-55's own examples
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("address", EIP55_VALID)
def test_eip55_addresses_are_accepted_and_stored_lower_case(address):
    assert address_normalize(chain="evm", bech32_hrp="", text=f"  {address} ") == address.lower()
    assert address_normalize(chain="evm", bech32_hrp="", text=address.lower()) == address.lower()


@pytest.mark.parametrize(
    "text",
    [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",  # one capital changed: the checksum catches it
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA",  # too short
        "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",  # no 0x
        "0xZZAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "",
    ],
)
def test_bad_evm_addresses_are_refused(text):
    with pytest.raises(InvalidRequest) as raised:
        address_normalize(chain="evm", bech32_hrp="", text=text)
    assert raised.value.code == "invalid_address"


@pytest.mark.parametrize(
    ("hrp", "text"),
    [
        ("bc", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"),  # BIP-173, upper case, P2WPKH
        ("tb", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"),  # BIP-173, P2WSH
        ("bc", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"),  # BIP-350, taproot
    ],
)
def test_published_segwit_addresses_are_accepted(hrp, text):
    assert address_normalize(chain="bitcoin", bech32_hrp=hrp, text=text) == text.lower()


@pytest.mark.parametrize(
    ("hrp", "text"),
    [
        ("bc", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"),  # another network's
        ("bc", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"),  # last character changed: checksum
        ("bc", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8f3t4"),  # mixed case
        ("bc", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),  # legacy base58: not accepted (yet)
        ("bc", "bc1qw508d6qejxtdg4c3"),  # truncated
    ],
)
def test_bad_segwit_addresses_are_refused(hrp, text):
    with pytest.raises(InvalidRequest) as raised:
        address_normalize(chain="bitcoin", bech32_hrp=hrp, text=text)
    assert raised.value.code == "invalid_address"


def test_an_address_from_a_real_litecoind_is_accepted_for_its_network_only(litecoind):
    address = litecoind.rpc("getnewaddress", "", "bech32")
    assert address_normalize(chain="litecoin", bech32_hrp="rltc", text=address) == address
    with pytest.raises(InvalidRequest):
        address_normalize(chain="litecoin", bech32_hrp="ltc", text=address)


@pytest.mark.parametrize(
    "text",
    [
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",  # the Bitcoin wiki's P2PKH example
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",  # the Bitcoin wiki's P2SH example
    ],
)
def test_legacy_addresses_are_accepted_with_the_networks_version_bytes(text):
    assert address_normalize(chain="bitcoin", bech32_hrp="bc", base58_versions=[0, 5], text=text) == text
    with pytest.raises(InvalidRequest, match="another network"):
        address_normalize(chain="bitcoin", bech32_hrp="tb", base58_versions=[111, 196], text=text)
    typo = text[:-1] + ("3" if text[-1] != "3" else "4")
    with pytest.raises(InvalidRequest, match="checksum"):
        address_normalize(chain="bitcoin", bech32_hrp="bc", base58_versions=[0, 5], text=typo)


@pytest.mark.django_db
def test_legacy_addresses_of_a_real_litecoind_match_the_regtest_networks_version_bytes(litecoind):
    from payments.models import Network

    regtest, mainnet = Network.objects.get(code="litecoin-regtest"), Network.objects.get(code="litecoin")
    for kind in ("legacy", "p2sh-segwit"):
        address = litecoind.rpc("getnewaddress", "", kind)
        normalized = address_normalize(
            chain="litecoin",
            bech32_hrp=regtest.bech32_hrp,
            base58_versions=regtest.base58_versions,
            text=address,
        )
        assert normalized == address, kind
        with pytest.raises(InvalidRequest):
            address_normalize(
                chain="litecoin",
                bech32_hrp=mainnet.bech32_hrp,
                base58_versions=mainnet.base58_versions,
                text=address,
            )


def test_the_script_a_scan_watches_is_the_one_litecoind_pays(litecoind):
    """A refund's destination may be legacy (P2PKH), P2SH or segwit: the scanner matches outputs on the
    script, taken here from the node itself (`getaddressinfo`), not from our own encoding."""
    from payments.chains.bitcoin_rpc import output_script_hex

    for kind in ("legacy", "p2sh-segwit", "bech32"):
        address = litecoind.rpc("getnewaddress", "", kind)
        assert (
            output_script_hex(address, "rltc") == litecoind.rpc("getaddressinfo", address)["scriptPubKey"]
        ), kind

"""Watch-only address derivation from an account extended public key. No private key ever enters here:
a private extended key is refused before it is parsed.

Bitcoin-family: BIP84 (native segwit, bech32) at account/0/i, from an account key with any of the
version prefixes SLIP-132 registers for single-key P2PKH or P2WPKH accounts: xpub, zpub (mainnet), tpub,
vpub (test networks), and Litecoin's own Ltub (mainnet) and ttub (test networks). Wrapped-segwit (BIP49)
keys (ypub, upub, Litecoin's Mtub) are refused.
EVM: BIP44 at account/0/i from the account xpub (m/44'/60'/0'); one address for every EVM network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bip_utils import (
    Base58ChecksumError,
    Base58Decoder,
    Bip32KeyError,
    Bip32KeyNetVersions,
    Bip32Secp256k1,
    EthAddrEncoder,
    P2WPKHAddrEncoder,
)

from .errors import InvalidExtendedKey


@dataclass(frozen=True)
class KeyVersion:
    prefix: str
    public: bytes
    mainnet: bool
    # BIP49 (ypub/upub/Mtub) keys are for wrapped segwit: deriving bech32 from them would give addresses
    # the merchant's wallet does not watch.
    supported: bool = True
    # A coin's own version (Litecoin's Ltub/ttub) serves that chain only; None: any chain.
    chain: str | None = None


# Public versions from SLIP-132's registry (github.com/satoshilabs/slips/blob/master/slip-0132.md); the
# tests check this table against the registry and each prefix against its Base58Check rendering.
_PUBLIC_VERSIONS = [
    KeyVersion("xpub", bytes.fromhex("0488b21e"), mainnet=True),
    KeyVersion("zpub", bytes.fromhex("04b24746"), mainnet=True),
    KeyVersion("Ltub", bytes.fromhex("019da462"), mainnet=True, chain="litecoin"),
    KeyVersion("tpub", bytes.fromhex("043587cf"), mainnet=False),
    KeyVersion("vpub", bytes.fromhex("045f1cf6"), mainnet=False),
    KeyVersion("ttub", bytes.fromhex("0436f6e1"), mainnet=False, chain="litecoin"),
    KeyVersion("ypub", bytes.fromhex("049d7cb2"), mainnet=True, supported=False),
    KeyVersion("upub", bytes.fromhex("044a5262"), mainnet=False, supported=False),
    KeyVersion("Mtub", bytes.fromhex("01b26ef6"), mainnet=True, supported=False, chain="litecoin"),
]
_PRIVATE_VERSIONS = {
    bytes.fromhex(h)
    for h in (
        "0488ade4",  # xprv
        "04b2430c",  # zprv
        "049d7878",  # yprv
        "04358394",  # tprv
        "045f18bc",  # vprv
        "044a4e28",  # uprv
        "019d9cfe",  # Ltpv
        "01b26792",  # Mtpv
        "0436ef7d",  # ttpv
    )
}
_BY_VERSION = {v.public: v for v in _PUBLIC_VERSIONS}
_UNUSED_PRIVATE_VERSION = bytes.fromhex("00000000")
ACCOUNT_DEPTH = 3  # m / purpose' / coin' / account'


@dataclass(frozen=True)
class AccountKey:
    """A parsed, validated account-level public key."""

    text: str
    version: KeyVersion
    node: Bip32Secp256k1

    @property
    def mainnet(self) -> bool:
        return self.version.mainnet

    @property
    def fingerprint(self) -> str:
        """The key material (chain code and public key) as a hash: the same for every version prefix the
        key is written with (xpub, zpub, vpub, ...), and what decides the addresses it derives."""
        return key_material_fingerprint(self.text)


def key_material_fingerprint(text: str) -> str:
    """sha256 of an extended key's chain code and public key (bytes 13..78 of its 78-byte payload),
    hex. Version, depth, parent fingerprint and child number are left out: they change no address."""
    return hashlib.sha256(Base58Decoder.CheckDecode(text)[13:]).hexdigest()


def parse_account_key(text: str) -> AccountKey:
    """Validate an account extended public key; raise InvalidExtendedKey with a stable code if it is not
    one we can derive from."""
    text = (text or "").strip()
    try:
        raw = Base58Decoder.CheckDecode(text)
    except (ValueError, TypeError, Base58ChecksumError) as exc:  # the checksum error is no ValueError
        raise InvalidExtendedKey("not a valid extended public key (bad base58 or checksum)") from exc
    if len(raw) != 78:
        raise InvalidExtendedKey("not a valid extended public key (wrong length)")
    version_bytes = raw[:4]
    if version_bytes in _PRIVATE_VERSIONS:
        raise InvalidExtendedKey(
            "this is a private extended key; give the account's public key (xpub/zpub/vpub)",
            code="private_key_rejected",
        )
    version = _BY_VERSION.get(version_bytes)
    if version is None:
        raise InvalidExtendedKey(f"unknown extended key version {version_bytes.hex()}")
    if not version.supported:
        raise InvalidExtendedKey(
            f"{version.prefix} keys are for wrapped segwit (BIP49); give the account's native segwit (BIP84) "
            "key: xpub/zpub, or tpub/vpub on a test network",
            code="unsupported_xpub_type",
        )
    try:
        node = Bip32Secp256k1.FromExtendedKey(
            text, Bip32KeyNetVersions(version_bytes, _UNUSED_PRIVATE_VERSION)
        )
    except (Bip32KeyError, ValueError) as exc:
        raise InvalidExtendedKey(f"not a valid extended public key ({exc})") from exc
    if not node.IsPublicOnly():
        raise InvalidExtendedKey("private keys are refused", code="private_key_rejected")
    if node.Depth().ToInt() != ACCOUNT_DEPTH:
        raise InvalidExtendedKey(
            f"expected an account-level key (depth 3, e.g. m/84'/0'/0'), got depth {node.Depth().ToInt()}",
            code="xpub_not_account_level",
        )
    return AccountKey(text=text, version=version, node=node)


def _receive_child(key: AccountKey, index: int, *, change: int = 0) -> Bip32Secp256k1:
    if not 0 <= index < 2**31:
        raise ValueError("derivation index out of range")
    return _chain_node(key, change).ChildKey(index)


def _chain_node(key: AccountKey, change: int) -> Bip32Secp256k1:
    """The account's receive (0) or change (1) chain node, derived once per key: a pool refill derives
    many indexes of one chain, and each derivation is an elliptic-curve multiplication."""
    cache_key = (key.text, change)
    node = _chain_nodes.get(cache_key)
    if node is None:
        if len(_chain_nodes) >= _CHAIN_NODES_MAX:
            _chain_nodes.clear()
        node = _chain_nodes[cache_key] = key.node.ChildKey(change)
    return node


# (extended key text, change) -> chain node; public keys only, bounded by the wallets in use.
_chain_nodes: dict[tuple[str, int], Bip32Secp256k1] = {}
_CHAIN_NODES_MAX = 2048


def derive_bech32_address(key: AccountKey, index: int, hrp: str, *, change: int = 0) -> str:
    """BIP84 receive address `index` (P2WPKH, bech32 with the network's HRP); `change=1`: the wallet's
    internal (change) chain, where the merchant's wallet software sends the change of a sweep."""
    child = _receive_child(key, index, change=change)
    return P2WPKHAddrEncoder.EncodeKey(child.PublicKey().RawCompressed().ToBytes(), hrp=hrp, wit_ver=0)


def derive_evm_address(key: AccountKey, index: int) -> str:
    """BIP44 receive address `index`, EIP-55 checksummed."""
    child = _receive_child(key, index)
    return EthAddrEncoder.EncodeKey(child.PublicKey().RawUncompressed().ToBytes())

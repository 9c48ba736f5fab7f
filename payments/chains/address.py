"""Addresses people type in (a merchant's treasury, a refund's destination), checked for the network they
are meant for before the gateway ever relies on them: EVM addresses with their EIP-55 checksum when they
carry one; Bitcoin-family addresses as native segwit (BIP-173 bech32 for witness version 0, BIP-350
bech32m above) with the network's HRP, or legacy base58check (P2PKH, P2SH) with one of the network's
version bytes."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bip_utils import Base58Decoder, SegwitBech32Decoder
from eth_utils import is_checksum_address

from ..errors import InvalidRequest

_EVM = re.compile(r"^0x[0-9a-fA-F]{40}$")


def address_normalize(
    *, chain: str, bech32_hrp: str, text: str, base58_versions: Sequence[int] = (), param: str = "address"
) -> str:
    """The address as the gateway stores it (EVM and bech32 lower case; base58 as written), or
    InvalidRequest `invalid_address` saying what is wrong."""
    text = (text or "").strip()

    def refuse(why: str) -> InvalidRequest:
        return InvalidRequest(f"not an address of this network: {why}", code="invalid_address", param=param)

    if chain == "evm":
        if not _EVM.match(text):
            raise refuse("an EVM address is 0x and 40 hex digits")
        digits = text[2:]
        mixed = digits != digits.lower() and digits != digits.upper()
        if mixed and not is_checksum_address(text):
            raise refuse("its EIP-55 checksum (the mix of capitals) is wrong: a typo?")
        return text.lower()
    if base58_versions and not text.lower().startswith((bech32_hrp or "\0") + "1"):
        return _base58(text, base58_versions, refuse)
    if not bech32_hrp:
        raise refuse("the network has no bech32 prefix configured")
    if text != text.lower() and text != text.upper():
        raise refuse("a bech32 address is all lower or all upper case")
    lowered = text.lower()
    if not lowered.startswith(bech32_hrp + "1"):
        raise refuse(f"addresses of this network begin with {bech32_hrp}1")
    try:
        version, program = SegwitBech32Decoder.Decode(bech32_hrp, lowered)
    except Exception as exc:  # bip_utils raises several types for a bad checksum, length or encoding
        raise refuse("its bech32 checksum or length is wrong: a typo?") from exc
    if version == 0 and len(program) not in (20, 32):
        raise refuse("a version 0 witness program is 20 or 32 bytes")
    return lowered


def _base58(text: str, versions: Sequence[int], refuse) -> str:
    """A legacy address: base58check of a version byte and a 20-byte hash (P2PKH or P2SH)."""
    try:
        payload = Base58Decoder.CheckDecode(text)
    except Exception as exc:  # bad characters, or a checksum that does not match: a typo
        raise refuse(
            "neither a bech32 address of this network nor a base58 address with a valid checksum"
        ) from exc
    if len(payload) != 21:
        raise refuse("a base58 address holds a version byte and a 20-byte hash")
    if payload[0] not in versions:
        raise refuse("a base58 address of another network (its version byte)")
    return text

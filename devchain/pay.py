"""Pay an EIP-681 payment URI from a funded account of the demo's local chain.

    .venv/bin/python -m devchain.pay 'ethereum:0x...@31337/transfer?address=0x...&uint256=49000000'
    .venv/bin/python -m devchain.pay 'ethereum:0x...@31337?value=8333340000000000' --fraction 0.5

`--fraction` pays part of the amount (to see `underpaid`), `--rpc` picks another node (default: the
demo's, from .state/demo-chain.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from web3 import Web3

from devchain.anvil import REPO_ROOT, compiled_token

PAYER_INDEX = 1  # anvil's second default account; the demo mints test USDC to it


def parse_eip681(uri: str) -> tuple[str, int, str | None, int]:
    """(recipient, chain id, token contract or None, amount in base units)."""
    parts = urlsplit(uri)
    if parts.scheme != "ethereum":
        raise ValueError("not an EIP-681 ethereum: URI")
    target, _, rest = parts.path.partition("@")
    chain_id_text, _, function = rest.partition("/")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if function == "transfer":
        return query["address"], int(chain_id_text), target, int(query["uint256"])
    return target, int(chain_id_text), None, int(Decimal(query["value"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("uri")
    parser.add_argument("--fraction", type=Decimal, default=Decimal(1))
    parser.add_argument("--rpc")
    args = parser.parse_args(argv)
    rpc = args.rpc
    if rpc is None:
        state = Path(os.environ.get("GATEWAY_STATE_DIR", REPO_ROOT / ".state")) / "demo-chain.json"
        rpc = json.loads(state.read_text())["rpc_url"]
    to, chain_id, token_address, amount = parse_eip681(args.uri)
    amount = int(amount * args.fraction)
    w3 = Web3(Web3.HTTPProvider(rpc))
    if w3.eth.chain_id != chain_id:
        print(f"the node at {rpc} is chain {w3.eth.chain_id}, the URI wants {chain_id}", file=sys.stderr)
        return 2
    payer = w3.eth.accounts[PAYER_INDEX]
    if token_address:
        abi, _ = compiled_token()
        token = w3.eth.contract(address=Web3.to_checksum_address(token_address), abi=abi)
        tx = token.functions.transfer(Web3.to_checksum_address(to), amount).transact({"from": payer})
    else:
        tx = w3.eth.send_transaction({"from": payer, "to": Web3.to_checksum_address(to), "value": amount})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    print(
        f"sent {amount} base units to {to} in tx {receipt['transactionHash'].to_0x_hex()} (block {receipt['blockNumber']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

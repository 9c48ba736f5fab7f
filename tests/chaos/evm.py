"""The EVM side of the chaos run: anvil with a test USDC as `evm-local`, a second anvil as `base` for
funds sent on the wrong network, the payments' kinds, and what the chains hold for the gateway."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

from devchain.anvil import AnvilNode, deploy_token, mint, send_eth, token_transfer, token_units

NETWORK = "evm-local"
OTHER_NETWORK = "base"  # chain id 8453 on a second anvil: the same addresses, another network
OTHER_CHAIN_ID = 8453
PAID_FRACTIONS = {  # the kinds paid plainly, on either chain: the fraction of the amount due, per transfer
    "exact": ["1"],
    "under": ["0.5"],
    "under_topped_up": ["0.6", "0.4"],
    "over": ["1.5"],
    "twice": ["1", "1"],
}
NATIVE_OUTPUT_INDEX = -1  # payments.models.evidence: how an ETH transfer is keyed
KINDS = {  # share of the EVM payments
    "exact": 30,
    "under": 8,
    "under_topped_up": 8,
    "over": 8,
    "twice": 8,
    "wrong_asset": 8,
    "wrong_network": 6,
    "late": 6,
    "reorged_then_paid": 8,
    "reorged": 6,
    "unpaid": 10,
}


def network_watched_sql(code: str, rpc_url: str, start_height: int) -> tuple[str, tuple]:
    """The statement that has the gateway watch a network through a local node from `start_height`."""
    return (
        "UPDATE payments_network SET enabled = TRUE, rpc_url = %s, scan_start_height = %s WHERE code = %s",
        (rpc_url, start_height, code),
    )


@dataclass
class Payment:
    chain: str
    kind: str
    intent: dict
    sent: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)

    @property
    def label(self) -> str:
        return f"{self.chain}:{self.kind}"


class EvmChains:
    """Both anvils (a block a second), the token, and paying from five funded accounts."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.node = AnvilNode(chain_id=31337, block_time=1).start()
        self.other = AnvilNode(chain_id=OTHER_CHAIN_ID, block_time=1).start()
        self.token = deploy_token(self.node.w3, self.node.accounts[0])
        for account in self.node.accounts[1:6]:
            mint(self.node.w3, self.token, self.node.accounts[0], account, token_units("1000000"))
        self.first = self.node.block_number()
        self.other_first = self.other.block_number()

    def networks_sql(self) -> list[tuple[str, tuple]]:
        """Statements that point the gateway at the chains (the admin's Network and Network asset forms
        in production): both networks watched from their current tip, the test USDC on evm-local."""
        return [
            network_watched_sql(NETWORK, self.node.url, self.first),
            network_watched_sql(OTHER_NETWORK, self.other.url, self.other_first),
            (
                "INSERT INTO payments_networkasset (network_id, asset_id, contract_address, decimals, "
                "default_confirmations, enabled) SELECT n.id, a.id, %s, 6, 2, TRUE FROM payments_network n, "
                "payments_asset a WHERE n.code = %s AND a.code = 'USDC' ON CONFLICT (network_id, asset_id) "
                "DO UPDATE SET contract_address = EXCLUDED.contract_address, decimals = 6, "
                "default_confirmations = 2",
                (self.token.address.lower(), NETWORK),
            ),
            (
                "UPDATE payments_networkasset SET default_confirmations = 2 WHERE network_id = "
                "(SELECT id FROM payments_network WHERE code = %s)",
                (OTHER_NETWORK,),
            ),
        ]

    def body(self, n: int) -> dict:
        asset = "USDC" if n % 3 == 0 else "ETH"
        return {
            "amount": "0.01" if asset == "ETH" else "12.5",
            "currency": asset,
            "asset": asset,
            "network": NETWORK,
        }

    def _sender(self, node: AnvilNode) -> str:
        return node.accounts[1 + self.rng.randrange(5)]

    def pay(
        self, intent: dict, fraction: Decimal, *, asset: str | None = None, node: AnvilNode | None = None
    ):
        units = int(Decimal(intent["amount_due"]["base_units"]) * fraction)
        asset = asset or intent["asset"]
        node = node or self.node
        if asset == "ETH":
            wei = units if intent["asset"] == "ETH" else units * 10**12  # another asset: an amount of ETH
            return send_eth(node.w3, self._sender(node), intent["address"], wei)
        amount = units if intent["asset"] == "USDC" else max(1, units // 10**12)
        return token_transfer(node.w3, self.token, self._sender(node), intent["address"], amount)

    def act(self, payment: Payment) -> None:
        """Pay as the kind says (late payments are paid by the run, after their expiry)."""
        kind, intent = payment.kind, payment.intent
        other = "USDC" if intent["asset"] == "ETH" else "ETH"
        if kind in PAID_FRACTIONS:
            for fraction in PAID_FRACTIONS[kind]:
                payment.sent.append(self.pay(intent, Decimal(fraction)))
        elif kind == "wrong_asset":
            payment.sent.append(self.pay(intent, Decimal(1), asset=other))
        elif kind == "wrong_network":  # the customer's wallet was on the other network
            payment.sent.append(self.pay(intent, Decimal(1), asset="ETH", node=self.other))
        elif kind in ("reorged", "reorged_then_paid"):
            time.sleep(2.2)  # the payments before are two blocks deep: the reorg leaves them alone
            tx = self.pay(intent, Decimal(1))
            payment.sent.append(tx)
            time.sleep(1.5)  # a scan may see it
            mined_in = self.node.w3.eth.get_transaction_receipt(tx)["blockNumber"]
            # the blocks from the payment's on replaced (height unchanged): its transaction is gone
            self.node.reorg(self.node.block_number() - mined_in + 1)
            # anvil_reorg sets the chain's clock back about two seconds each time; a chain whose block
            # times lag the wall clock would make late payments look on time (first seen is the block's)
            self.node.rpc("evm_setNextBlockTimestamp", [int(time.time()) + 1])
            if kind == "reorged_then_paid":
                payment.sent.append(self.pay(intent, Decimal(1)))

    def pay_late(self, payment: Payment) -> None:
        payment.sent.append(self.pay(payment.intent, Decimal(1)))

    def mine(self) -> None:
        self.node.mine(1)
        self.other.mine(1)

    def transfers(self, addresses: set[str]) -> dict[str, set[tuple[str, int]]]:
        """Per network, (tx hash, index) of every ETH transaction and (evm-local) USDC Transfer log to one
        of `addresses`, keyed as the gateway keys observations (ETH: index -1; a log: its log index)."""
        found = {NETWORK: set(), OTHER_NETWORK: set()}
        for network, node, first in (
            (NETWORK, self.node, self.first),
            (OTHER_NETWORK, self.other, self.other_first),
        ):
            for height in range(first, node.block_number() + 1):
                for tx in node.w3.eth.get_block(height, full_transactions=True).transactions:
                    if tx["to"] and tx["to"].lower() in addresses and tx["value"] > 0:
                        found[network].add((tx["hash"].to_0x_hex().lower(), NATIVE_OUTPUT_INDEX))
        w3 = self.node.w3
        logs = w3.eth.get_logs(
            {
                "fromBlock": self.first,
                "toBlock": "latest",
                "address": w3.to_checksum_address(self.token.address),
                "topics": [w3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()],
            }
        )
        for entry in logs:
            if ("0x" + entry["topics"][2].hex()[-40:]).lower() in addresses:
                found[NETWORK].add((entry["transactionHash"].to_0x_hex().lower(), entry["logIndex"]))
        return found

    def stop(self) -> None:
        self.node.stop()
        self.other.stop()

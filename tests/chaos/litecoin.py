"""The Bitcoin-family side of the chaos run: litecoind in regtest as `litecoin-regtest` (Core RPC), a
block every two seconds, payments by the node's wallet with RBF replacements, double spends and reorgs
(`invalidateblock`), and what the chain holds for the gateway's addresses."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

from tests.nodes.litecoind import LitecoindNode
from tests.nodes.merchant_keys import account_key

from .evm import PAID_FRACTIONS, Payment, network_watched_sql

NETWORK = "litecoin-regtest"
ACCOUNT_KEY_PATH = "m/84'/1'/0'"  # the merchant's BIP84 testnet account (tpub) of the test mnemonic
COIN = Decimal(10) ** 8
KINDS = {  # share of the Litecoin payments
    "exact": 30,
    "under": 8,
    "under_topped_up": 8,
    "over": 8,
    "twice": 8,
    "late": 6,
    "rbf_bumped": 8,  # replaced by the same payment with a higher fee: paid once
    "rbf_away": 8,  # replaced by a transaction paying the customer back: never paid
    "reorged": 8,  # its block invalidated; mined again in another block
    "reorged_away": 6,  # its block invalidated; a double spend mined instead
    "unpaid": 10,
}


def account_public_key() -> str:
    return account_key(ACCOUNT_KEY_PATH, testnet=True)


class LitecoinChain:
    """The node and a miner thread; payments and reorgs hold `lock` so that no block is mined in the
    middle of one (a replacement must meet its original still in the mempool)."""

    BLOCK_S = 2.0

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.node = LitecoindNode(initial_blocks=150).start()  # 50 mature coinbases to pay from
        self.first = self.node.height()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.miner = threading.Thread(target=self._mine_forever, daemon=True, name="litecoin-miner")
        self.miner.start()

    def _mine_forever(self) -> None:
        while not self.stopping.wait(self.BLOCK_S):
            self.mine()

    def mine(self, n: int = 1) -> list[str]:
        with self.lock:
            return self.node.mine(n)

    def networks_sql(self) -> list[tuple[str, tuple]]:
        return [
            network_watched_sql(NETWORK, self.node.url, self.first),
            (
                "UPDATE payments_networkasset SET default_confirmations = 2 WHERE network_id = "
                "(SELECT id FROM payments_network WHERE code = %s)",
                (NETWORK,),
            ),
        ]

    def body(self, n: int) -> dict:
        return {"amount": "0.05", "currency": "LTC", "asset": "LTC", "network": NETWORK}

    def _send(self, intent: dict, fraction: Decimal, *, replaceable: bool = False) -> str:
        coins = (Decimal(intent["amount_due"]["base_units"]) * fraction / COIN).quantize(
            Decimal("0.00000001")
        )
        return self.node.send(intent["address"], str(coins), replaceable=replaceable)

    def act(self, payment: Payment) -> None:
        kind, intent = payment.kind, payment.intent
        if kind in PAID_FRACTIONS:
            for fraction in PAID_FRACTIONS[kind]:
                payment.sent.append(self._send(intent, Decimal(fraction)))
        elif kind in ("rbf_bumped", "rbf_away"):
            with self.lock:  # no block until the replacement is in the mempool
                txid = self._send(intent, Decimal(1), replaceable=True)
                payment.sent.append(txid)
                time.sleep(1.5)  # a scan may see the original in the mempool
                if kind == "rbf_bumped":
                    payment.sent.append(self.node.rpc("bumpfee", txid)["txid"])
                else:
                    self.node.rpc("sendrawtransaction", self.node.conflicting_transaction(txid))
        elif kind in ("reorged", "reorged_away"):
            with self.lock:
                txid = self._send(intent, Decimal(1), replaceable=kind == "reorged_away")
                payment.sent.append(txid)
                (block,) = self.node.mine(1)
                time.sleep(2.5)  # a scan may see it with its first confirmation
                self.node.rpc("invalidateblock", block)  # its transactions go back to the mempool
                if kind == "reorged_away":  # the customer's replacement wins the new chain
                    self.node.rpc("sendrawtransaction", self.node.conflicting_transaction(txid))
                # A longer chain without the old block, mined to another address: the initial blocks
                # pushed block times ahead of the clock (each is the median past + 1 s), so a block
                # mined to the same address at the same height could be the invalidated one again
                # (rejected as a duplicate of an invalid block).
                self.node.mine(2, self.node.rpc("getnewaddress"))

    def pay_late(self, payment: Payment) -> None:
        payment.sent.append(self._send(payment.intent, Decimal(1)))

    def transfers(self, addresses: set[str]) -> dict[str, set[tuple[str, int]]]:
        """(txid, output index) of every output of the best chain since the start paying one of
        `addresses`, and of the mempool's."""
        found: set[tuple[str, int]] = set()

        def outputs(tx: dict) -> None:
            for vout in tx["vout"]:
                script = vout["scriptPubKey"]
                for address in [script["address"]] if "address" in script else script.get("addresses", []):
                    if address in addresses:
                        found.add((tx["txid"], vout["n"]))

        for height in range(self.first + 1, self.node.height() + 1):
            block = self.node.rpc("getblock", self.node.rpc("getblockhash", height), 2)
            for tx in block["tx"]:
                outputs(tx)
        for txid in self.node.rpc("getrawmempool"):
            outputs(self.node.rpc("getrawtransaction", txid, True))
        return {NETWORK: found}

    def stop(self) -> None:
        self.stopping.set()
        self.miner.join(10)
        self.node.stop()

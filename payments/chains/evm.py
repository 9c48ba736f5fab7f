"""EVM chains through web3.py against any JSON-RPC node: native coin transfers (block scan) and ERC-20
`Transfer` logs to watched addresses (any token contract, so a wrong token is seen too); and, as outflows,
Transfer logs from the addresses that hold funds and every transaction they send, with its gas.

Logs are queried in chunks of blocks and of addresses (the `to` topic takes an OR-list), so the cost
of a range grows with the blocks and the matches, not with the number of watched addresses beyond the
number of chunks. Native value sent by a contract (an internal transaction) is not visible this way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import UTC, datetime

from web3 import Web3
from web3.exceptions import TransactionNotFound as Web3TransactionNotFound
from web3.providers import HTTPProvider

from .base import (
    NO_SPENDS,
    BlockRef,
    ChainNodeError,
    Destination,
    Spend,
    SpendWatch,
    TransactionNotFound,
    TransactionPending,
    Transfer,
)
from .redaction import redact_text, redact_url

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
BALANCE_OF_SELECTOR = "0x70a08231"  # balanceOf(address)
EVM_NATIVE_OUTPUT_INDEX = -1
BLOCK_TIME_CACHE = 10_000


def _hex(value) -> str:
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return value.to_0x_hex().lower() if hasattr(value, "to_0x_hex") else "0x" + bytes(value).hex()


def _gas_paid(receipt) -> int | None:
    """What a mined transaction cost its sender in wei (paid even when it reverted); None from a node
    whose receipts lack `effectiveGasPrice` (before London)."""
    price = receipt.get("effectiveGasPrice")
    return int(receipt["gasUsed"]) * int(price) if price is not None else None


def address_topic(address: str) -> str:
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


class _NodeProvider(HTTPProvider):
    """web3's HTTP provider whose failures name the node by its redacted URL: requests puts the URL's
    path in its messages ("Max retries exceeded with url: /v3/KEY"), and a hosted node's API key is there.
    The original exception is not chained (`from None`): its text would print the key in a traceback."""

    def __init__(self, network_code: str, rpc_url: str, **kwargs):
        super().__init__(rpc_url, **kwargs)
        self._network_code = network_code
        self._rpc_url = rpc_url

    def __str__(self) -> str:
        return f"RPC connection {redact_url(self._rpc_url)}"

    def make_request(self, method, params):
        try:
            return super().make_request(method, params)
        except OSError as exc:  # requests' errors are OSErrors: refused, timed out, HTTP 4xx/5xx
            detail = redact_text(f"{type(exc).__name__}: {exc}", url=self._rpc_url)
            raise ChainNodeError(
                f"{self._network_code}: {method} at {redact_url(self._rpc_url)} failed: {detail}"
            ) from None


class EvmBackend:
    def __init__(
        self,
        network_code: str,
        rpc_url: str,
        *,
        log_block_chunk: int = 2000,
        address_chunk: int = 1000,
        unfiltered_block_chunk: int = 100,
        timeout_s: float = 10.0,
        scan_native: bool = True,
    ):
        self.network_code = network_code
        self.w3 = Web3(_NodeProvider(network_code, rpc_url, request_kwargs={"timeout": timeout_s}))
        self.log_block_chunk = log_block_chunk
        self.address_chunk = address_chunk
        self.unfiltered_block_chunk = unfiltered_block_chunk
        self.scan_native = scan_native
        self._block_times: dict[int, tuple[str, datetime]] = {}

    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def tip(self) -> BlockRef:
        return self._ref(self.w3.eth.get_block("latest"))

    def block_ref(self, height: int) -> BlockRef:
        return self._ref(self.w3.eth.get_block(height))

    def _ref(self, block) -> BlockRef:
        return BlockRef(
            height=int(block["number"]),
            hash=_hex(block["hash"]),
            time=datetime.fromtimestamp(int(block["timestamp"]), tz=UTC),
        )

    def transfers(self, watched: Collection[str], start: int, end: int) -> Iterator[Transfer]:
        return (item for item in self.activity(watched, NO_SPENDS, start, end) if isinstance(item, Transfer))

    def pending_transfers(self, watched: Collection[str], now: datetime) -> Iterator[Transfer]:
        return iter(())  # EVM mempools are not relied on: transfers count once they are in a block

    def activity(
        self, watched: Collection[str], spends: SpendWatch, start: int, end: int
    ) -> Iterator[Transfer | Spend]:
        """Token transfers to watched addresses and from `spends.senders` (one log query serves both when
        the lists are long), then, block by block, native value to watched addresses and every transaction
        a sender sent (its value, 0 for a token sweep or a reverted call, and the gas it paid)."""
        wanted = {a.lower() for a in watched}
        senders = {a.lower() for a in spends.senders} if spends else set()
        if (not wanted and not senders) or end < start:
            return
        gas: dict[
            str, tuple[int | None, str]
        ] = {}  # tx hash -> (fee in wei, who paid it), read once per call
        yield from self._token_activity(wanted, senders, start, end, gas)
        if self.scan_native:
            yield from self._native_activity(wanted, senders, start, end, gas)

    def pending_activity(
        self, watched: Collection[str], spends: SpendWatch, now: datetime
    ) -> Iterator[Transfer | Spend]:
        return iter(())  # as pending_transfers: outflows count once they are in a block

    def live_transactions(self, tx_hashes: Collection[str]) -> set[str]:
        return set(tx_hashes)  # nothing unconfirmed is ever recorded on EVM networks

    def balances(
        self, addresses: Collection[str], token_contract: str = "", *, height: int | None = None
    ) -> tuple[int, dict[str, int]]:
        """`eth_getBalance` (native) or the token's `balanceOf` for each address, all at one block (`height`,
        else the best)."""
        height = int(self.w3.eth.block_number) if height is None else height
        held: dict[str, int] = {}
        for address in addresses:
            account = Web3.to_checksum_address(address)
            if token_contract:
                data = BALANCE_OF_SELECTOR + account[2:].lower().rjust(64, "0")
                answer = self.w3.eth.call(
                    {"to": Web3.to_checksum_address(token_contract), "data": data}, block_identifier=height
                )
                amount = int.from_bytes(bytes(answer), "big") if answer else 0
            else:
                amount = int(self.w3.eth.get_balance(account, block_identifier=height))
            if amount:
                held[address] = amount
        return height, held

    def transaction_transfers(
        self, tx_hash: str, watched: Collection[str], now: datetime, *, block_hash: str = ""
    ) -> list[Transfer]:
        """One transaction by its hash: its receipt's ERC-20 Transfer logs to watched addresses (as the
        log scan reads them) and its native value to one (as the block scan does), once it is in a block
        and did not revert. A transaction only in a mempool is refused: EVM payments count in a block."""
        wanted = {a.lower() for a in watched}
        try:
            receipt = self.w3.eth.get_transaction_receipt(tx_hash)
        except Web3TransactionNotFound:
            try:
                self.w3.eth.get_transaction(tx_hash)
            except Web3TransactionNotFound:
                raise TransactionNotFound(
                    f"{self.network_code}: the node knows no transaction {tx_hash}"
                ) from None
            raise TransactionPending(
                f"{self.network_code}: transaction {tx_hash} is not in a block yet; try again once it is"
            ) from None
        if int(receipt["status"]) != 1:
            return []  # a reverted transaction moved nothing
        found = []
        for log in receipt["logs"]:
            topics = log["topics"]
            if len(topics) != 3 or _hex(topics[0]) != TRANSFER_TOPIC:
                continue
            to = "0x" + _hex(topics[2])[-40:]
            if to in wanted:
                found.append(self._log_transfer(log, to, "0x" + _hex(topics[1])[-40:]))
        tx = self.w3.eth.get_transaction(tx_hash)
        to = (tx.get("to") or "").lower()
        if self.scan_native and to in wanted and int(tx["value"]) > 0:
            height = int(receipt["blockNumber"])
            block_hash, block_time = self._block_time(height, _hex(receipt["blockHash"]))
            found.append(self._native_transfer(tx, BlockRef(height, block_hash, block_time)))
        return found

    def _token_activity(
        self,
        wanted: set[str],
        senders: set[str],
        start: int,
        end: int,
        gas: dict[str, tuple[int | None, str]],
    ) -> Iterator[Transfer | Spend]:
        """With at most `address_chunk` addresses in each list, ask the node for the logs to them and the
        logs from them (one call each per block chunk). With more, fetching by topic would cost one call per
        address chunk, growing with the watched set: instead fetch every Transfer log of smaller block
        chunks once and match both ends locally, so the cost follows the chain's activity, not the number
        of watched addresses."""
        if len(wanted) <= self.address_chunk and len(senders) <= self.address_chunk:
            # Outflows first: a transfer from one of the merchant's addresses to another is known to be the
            # merchant's own money when its credit is recorded.
            queries = []
            if senders:
                from_topics = [address_topic(a) for a in sorted(senders)]
                queries.append((self.log_block_chunk, [TRANSFER_TOPIC, from_topics], False, True))
            if wanted:
                to_topics = [address_topic(a) for a in sorted(wanted)]
                queries.append((self.log_block_chunk, [TRANSFER_TOPIC, None, to_topics], True, False))
        else:
            queries = [(self.unfiltered_block_chunk, [TRANSFER_TOPIC], True, True)]
        for block_chunk, topics, credits, debits in queries:
            for lo in range(start, end + 1, block_chunk):
                hi = min(end, lo + block_chunk - 1)
                for log in self.w3.eth.get_logs({"fromBlock": lo, "toBlock": hi, "topics": topics}):
                    if len(log["topics"]) != 3:
                        continue  # ERC-721 Transfer has the token id as a third indexed topic
                    sender = "0x" + _hex(log["topics"][1])[-40:]
                    to = "0x" + _hex(log["topics"][2])[-40:]
                    if debits and sender in senders:
                        yield self._log_spend(log, sender, to, gas)
                    if credits and to in wanted:
                        yield self._log_transfer(log, to, sender)

    def _log_transfer(self, log, to: str, sender: str = "") -> Transfer:
        height = int(log["blockNumber"])
        block_hash, block_time = self._block_time(height, _hex(log["blockHash"]))
        data = _hex(log["data"])
        return Transfer(
            network_code=self.network_code,
            tx_hash=_hex(log["transactionHash"]),
            output_index=int(log["logIndex"]),
            address=to,
            amount_base_units=int(data, 16) if data != "0x" else 0,
            token_contract=_hex(log["address"]),
            block_height=height,
            block_hash=block_hash,
            block_time=block_time,
            position_in_block=int(log["transactionIndex"]),
            sender=sender,
        )

    def _log_spend(self, log, sender: str, to: str, gas: dict[str, tuple[int | None, str]]) -> Spend:
        """A token transfer out of a watched address, with the gas of its transaction (paid by the address
        itself for a plain `transfer`, by whoever sent a `transferFrom`)."""
        transfer = self._log_transfer(log, to, sender)
        if transfer.tx_hash not in gas:
            receipt = self.w3.eth.get_transaction_receipt(transfer.tx_hash)
            gas[transfer.tx_hash] = (_gas_paid(receipt), str(receipt["from"]).lower())
        fee, payer = gas[transfer.tx_hash]
        destination = Destination(
            index=transfer.output_index,
            address=to,
            amount_base_units=transfer.amount_base_units,
            token_contract=transfer.token_contract,
        )
        return Spend(
            network_code=self.network_code,
            tx_hash=transfer.tx_hash,
            index=transfer.output_index,
            address=sender,
            amount_base_units=transfer.amount_base_units,
            token_contract=transfer.token_contract,
            destinations=(destination,),
            fee_base_units=fee,
            fee_payer=payer,
            block_height=transfer.block_height,
            block_hash=transfer.block_hash,
            block_time=transfer.block_time,
            position_in_block=transfer.position_in_block,
        )

    def _native_activity(
        self,
        wanted: set[str],
        senders: set[str],
        start: int,
        end: int,
        gas: dict[str, tuple[int | None, str]],
    ) -> Iterator[Transfer | Spend]:
        for height in range(start, end + 1):
            block = self.w3.eth.get_block(height, full_transactions=True)
            ref = self._ref(block)
            self._remember_block(height, (ref.hash, ref.time))
            for tx in block["transactions"]:
                to = (tx.get("to") or "").lower()
                sender = str(tx["from"]).lower()
                credit = bool(to) and int(tx["value"]) > 0 and to in wanted
                if not credit and sender not in senders:
                    continue
                tx_hash = _hex(tx["hash"])
                if tx_hash in gas and gas[tx_hash][1] == sender:
                    # Its token transfer out was read already: a transaction that emitted a log succeeded,
                    # and its receipt's gas is known.
                    succeeded, fee = True, gas[tx_hash][0]
                else:
                    receipt = self.w3.eth.get_transaction_receipt(tx["hash"])
                    succeeded, fee = int(receipt["status"]) == 1, _gas_paid(receipt)
                if sender in senders:
                    gas[tx_hash] = (fee, sender)
                    yield self._native_spend(tx, ref, sender, to, succeeded, fee)
                if credit and succeeded:  # a reverted transaction moved no value
                    yield self._native_transfer(tx, ref)

    def _native_spend(
        self, tx, block: BlockRef, sender: str, to: str, succeeded: bool, fee: int | None
    ) -> Spend:
        value = int(tx["value"]) if succeeded else 0
        return Spend(
            network_code=self.network_code,
            tx_hash=_hex(tx["hash"]),
            index=EVM_NATIVE_OUTPUT_INDEX,
            address=sender,
            amount_base_units=value,
            # A call that moves no coin (a token sweep, a reverted transaction) sends nothing anywhere.
            destinations=(
                (Destination(index=EVM_NATIVE_OUTPUT_INDEX, address=to, amount_base_units=value),)
                if value
                else ()
            ),
            fee_base_units=fee,
            fee_payer=sender,
            block_height=block.height,
            block_hash=block.hash,
            block_time=block.time,
            position_in_block=int(tx["transactionIndex"]),
        )

    def _native_transfer(self, tx, block: BlockRef) -> Transfer:
        return Transfer(
            network_code=self.network_code,
            tx_hash=_hex(tx["hash"]),
            output_index=EVM_NATIVE_OUTPUT_INDEX,
            address=tx["to"].lower(),
            amount_base_units=int(tx["value"]),
            block_height=block.height,
            block_hash=block.hash,
            block_time=block.time,
            position_in_block=int(tx["transactionIndex"]),
            sender=str(tx["from"]).lower(),
        )

    def _block_time(self, height: int, block_hash: str) -> tuple[str, datetime]:
        """The hash a log or receipt names (not the chain's block at its height now: a log read from a
        block a reorg has since replaced must say so, for the scan's check to roll its batch back),
        with the time of the block at that height."""
        cached = self._block_times.get(height)
        if cached is None or cached[0] != block_hash:
            ref = self.block_ref(height)
            cached = (ref.hash, ref.time)
            self._remember_block(height, cached)
        return block_hash, cached[1]

    def _remember_block(self, height: int, entry: tuple[str, datetime]) -> None:
        if len(self._block_times) >= BLOCK_TIME_CACHE:
            self._block_times.clear()  # a scan moves forward: old heights are not asked for again
        self._block_times[height] = entry

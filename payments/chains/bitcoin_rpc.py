"""Bitcoin-family chains through Bitcoin Core's JSON-RPC (Litecoin Core speaks the same): outputs paying
watched native-segwit (bech32) addresses, in blocks (`getblock <hash> 2`) and in the mempool.

Outputs are matched on their scriptPubKey hex (the watched addresses are decoded once per call into
witness scripts), not on the address fields of the decoded JSON, which differ between versions and
forks (`address` in Bitcoin Core 22+, an `addresses` list in Litecoin Core 0.21). Amounts arrive as JSON
numbers in coins; they are parsed as Decimal and converted exactly to satoshi, never through a float.

Plain http.client JSON-RPC, no node wallet needed: `rpc_url` may carry the credentials
(`http://user:pass@127.0.0.1:19443`), or pass `rpc_user`/`rpc_password`.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from bip_utils import Base58Decoder, SegwitBech32Decoder

from .base import BlockRef, ChainNodeError, Spend, SpendWatch, TransactionNotFound, Transfer
from .redaction import redact_url
from .utxo import (
    Outpoint,
    TransfersFromActivity,
    UtxoTx,
    block_activity,
    fee_from_values,
    mempool_activity,
    tx_transfers,
)

COIN = Decimal(10) ** 8
RPC_INVALID_ADDRESS_OR_KEY = -5  # e.g. getrawtransaction of a txid that has just left the mempool
RPC_INVALID_PARAMETER = -8  # e.g. getrawtransaction naming a block the node does not have


class BitcoinRpcError(ChainNodeError):
    """The node could not be reached, or answered an RPC call with an error."""

    def __init__(self, message: str, *, code: int | None = None):
        super().__init__(message)
        self.code = code


@lru_cache(maxsize=500_000)  # decoding bech32 costs ~40 us; scans ask for the same addresses every time
def witness_script_hex(address: str, hrp: str) -> str:
    """The scriptPubKey (hex) of a segwit address with human-readable part `hrp`: `0014<20 bytes>` for
    P2WPKH, `0020<32 bytes>` for P2WSH, `OP_n <program>` for later witness versions."""
    try:
        version, program = SegwitBech32Decoder.Decode(hrp, address)
    except Exception as exc:  # bip_utils raises several types for a bad checksum, HRP or length
        raise ValueError(f"{address!r} is not a segwit address for HRP {hrp!r}: {exc}") from exc
    op_version = 0 if version == 0 else 0x50 + version
    return bytes([op_version, len(program)]).hex() + bytes(program).hex()


# Version bytes of P2SH addresses in Bitcoin Core's and Litecoin Core's chainparams (SCRIPT_ADDRESS and
# Litecoin's SCRIPT_ADDRESS2): mainnet 5 and 50 ("M"), test networks 196 and 58 ("Q"). Other versions
# accepted for a network (`Network.base58_versions`) are P2PKH.
P2SH_VERSIONS = frozenset({5, 196, 50, 58})


@lru_cache(maxsize=500_000)
def output_script_hex(address: str, hrp: str) -> str:
    """The scriptPubKey (hex) an address is paid with: segwit (bech32 with `hrp`), or a legacy base58check
    P2PKH (`OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG`) or P2SH (`OP_HASH160 <20> OP_EQUAL`), as a
    refund's destination may be."""
    if address.lower().startswith(hrp + "1"):
        return witness_script_hex(address.lower(), hrp)
    try:
        payload = Base58Decoder.CheckDecode(address)
    except Exception as exc:  # bip_utils raises several types for bad characters or checksum
        raise ValueError(f"{address!r} is neither a segwit address for HRP {hrp!r} nor base58check") from exc
    if len(payload) != 21:
        raise ValueError(f"{address!r}: a base58 address holds a version byte and a 20-byte hash")
    if payload[0] in P2SH_VERSIONS:
        return "a914" + payload[1:].hex() + "87"
    return "76a914" + payload[1:].hex() + "88ac"


def to_satoshi(value: Decimal | int | str) -> int:
    """An amount in coins (as the node's JSON shows it) -> satoshi, exactly; refuses sub-satoshi values."""
    if isinstance(value, float):
        raise TypeError("amounts must be parsed as Decimal, not float")
    units = Decimal(value) * COIN
    if units != units.to_integral_value():
        raise ValueError(f"amount {value} has more than 8 decimals")
    return int(units)


def _block_time(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=UTC)


class BitcoinCoreBackend(TransfersFromActivity):
    def __init__(
        self,
        network_code: str,
        rpc_url: str,
        *,
        hrp: str,
        rpc_user: str | None = None,
        rpc_password: str | None = None,
        timeout_s: float = 30.0,
    ):
        self.network_code = network_code
        self.hrp = hrp
        self.timeout_s = timeout_s
        parts = urlsplit(rpc_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"rpc_url must be http(s)://[user:pass@]host:port[/path], not {redact_url(rpc_url)!r}"
            )
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path or "/"
        user = rpc_user if rpc_user is not None else unquote(parts.username or "")
        password = rpc_password if rpc_password is not None else unquote(parts.password or "")
        self._headers = {"Content-Type": "application/json"}
        if user or password:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._where = redact_url(rpc_url)  # no credentials (user, password, a key in the path) in errors
        self._request_id = 0
        # txid -> the transaction as the matching needs it: a mempool transaction is decoded once
        self._mempool_txs: dict[str, UtxoTx] = {}

    # --- JSON-RPC --------------------------------------------------------------------------------------

    def _post(self, payload: Any) -> Any:
        connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = connection_class(self._host, self._port, timeout=self.timeout_s)
        try:
            connection.request("POST", self._path, body=json.dumps(payload), headers=self._headers)
            response = connection.getresponse()
            body = response.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise BitcoinRpcError(
                f"{self.network_code}: cannot reach the node at {self._where}: {exc}"
            ) from exc
        finally:
            connection.close()
        if response.status in (401, 403):
            raise BitcoinRpcError(
                f"{self.network_code}: the node at {self._where} refused the RPC credentials "
                f"(HTTP {response.status})"
            )
        try:
            # Bitcoin Core answers RPC errors with HTTP 404/500 and a JSON body: parse before the status.
            return json.loads(body, parse_float=Decimal)
        except ValueError as exc:
            raise BitcoinRpcError(
                f"{self.network_code}: HTTP {response.status} from {self._where} is not JSON-RPC: "
                f"{body[:300]!r}"
            ) from exc

    def _next_id(self) -> int:
        self._request_id += 1
        return self._request_id

    @staticmethod
    def _raise(method: str, params: Sequence[Any], error: Any, network_code: str) -> None:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        raise BitcoinRpcError(
            f"{network_code}: {method}{list(params)!r} failed: {message} (code {code})", code=code
        )

    def rpc(self, method: str, *params: Any) -> Any:
        """One call; returns `result` (floats as Decimal), raises BitcoinRpcError on any failure."""
        reply = self._post(
            {"jsonrpc": "1.0", "id": self._next_id(), "method": method, "params": list(params)}
        )
        if not isinstance(reply, dict):
            raise BitcoinRpcError(f"{self.network_code}: {method}: unexpected reply {reply!r:.300}")
        if reply.get("error") is not None:
            self._raise(method, params, reply["error"], self.network_code)
        return reply.get("result")

    def rpc_batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[tuple[Any, dict | None]]:
        """Several calls in one request; (result, error) per call, in order (errors are not raised)."""
        if not calls:
            return []
        first = self._request_id + 1
        self._request_id += len(calls)
        payload = [
            {"jsonrpc": "1.0", "id": first + i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        replies = self._post(payload)
        if not isinstance(replies, list):
            if isinstance(replies, dict) and replies.get("error") is not None:
                self._raise("batch", [], replies["error"], self.network_code)
            raise BitcoinRpcError(f"{self.network_code}: batch: unexpected reply {replies!r:.300}")
        by_id = {reply.get("id"): reply for reply in replies if isinstance(reply, dict)}
        out = []
        for i in range(len(calls)):
            reply = by_id.get(first + i)
            if reply is None:
                out.append((None, {"code": None, "message": "no reply in the batch"}))
            else:
                out.append((reply.get("result"), reply.get("error")))
        return out

    # --- ChainBackend ---------------------------------------------------------------------------------

    def tip(self) -> BlockRef:
        return self._ref(self.rpc("getblockheader", self.rpc("getbestblockhash")))

    def block_ref(self, height: int) -> BlockRef:
        return self._ref(self.rpc("getblockheader", self.rpc("getblockhash", height)))

    @staticmethod
    def _ref(header: dict) -> BlockRef:
        return BlockRef(height=int(header["height"]), hash=header["hash"], time=_block_time(header["time"]))

    def watched_scripts(self, watched: Collection[str]) -> dict[str, str]:
        """scriptPubKey hex -> the watched address as given (so a Transfer names it as the gateway does)."""
        return {output_script_hex(address, self.hrp): address for address in watched}

    def balances(
        self, addresses: Collection[str], token_contract: str = "", *, height: int | None = None
    ) -> tuple[int, dict[str, int]]:
        """`scantxoutset` over the addresses' scripts: the node's UTXO set (confirmed outputs only), at the
        height it reports, needing no wallet."""
        if token_contract:
            return self.tip().height, {}
        scripts = self.watched_scripts(addresses)
        if not scripts:
            return self.tip().height, {}
        result = self.rpc("scantxoutset", "start", [f"raw({script})" for script in scripts])
        held: dict[str, int] = {}
        for unspent in result.get("unspents", ()):
            address = scripts[unspent["scriptPubKey"]]
            held[address] = held.get(address, 0) + to_satoshi(unspent["amount"])
        return int(result["height"]), held

    def activity(
        self, watched: Collection[str], spends: SpendWatch, start: int, end: int
    ) -> Iterator[Transfer | Spend]:
        scripts = self.watched_scripts(watched)
        if (not scripts and not (spends and spends.outpoints)) or end < start:
            return
        outpoints = dict(spends.outpoints) if spends else None
        for height in range(start, end + 1):
            block = self.rpc("getblock", self.rpc("getblockhash", height), 2)
            yield from block_activity(
                self.network_code,
                BlockRef(int(block["height"]), block["hash"], _block_time(block["time"])),
                (utxo_tx(tx) for tx in block["tx"]),
                scripts,
                outpoints,
                self.fee_of,
            )

    def pending_activity(
        self, watched: Collection[str], spends: SpendWatch, now: datetime
    ) -> Iterator[Transfer | Spend]:
        scripts = self.watched_scripts(watched)
        if not scripts and not (spends and spends.outpoints):
            return
        txids = self.rpc("getrawmempool", False)
        current = set(txids)
        for txid in [t for t in self._mempool_txs if t not in current]:
            del self._mempool_txs[txid]  # mined or dropped: forget it
        missing = [txid for txid in txids if txid not in self._mempool_txs]
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            results = self.rpc_batch([("getrawtransaction", (txid, True)) for txid in chunk])
            for txid, (tx, error) in zip(chunk, results, strict=True):
                if error is not None:
                    if error.get("code") == RPC_INVALID_ADDRESS_OR_KEY:
                        continue  # left the mempool since getrawmempool: not pending any more
                    self._raise("getrawtransaction", (txid, True), error, self.network_code)
                self._mempool_txs[txid] = utxo_tx(tx)
        pending = (self._mempool_txs[txid] for txid in txids if txid in self._mempool_txs)
        outpoints = dict(spends.outpoints) if spends else None
        yield from mempool_activity(self.network_code, pending, scripts, outpoints, self.fee_of, now)

    def fee_of(self, tx: UtxoTx, known: Mapping[Outpoint, int]) -> int | None:
        """A spending transaction's fee: its inputs' values (those the gateway credited are `known`, the
        others are read from their transactions: the node needs txindex=1 for a mined one) minus its
        outputs. None if an input's transaction cannot be read."""
        values = dict(known)
        wanted = sorted({txid for txid, n in tx.inputs if (txid, n) not in values})
        if wanted:
            results = self.rpc_batch([("getrawtransaction", (txid, True)) for txid in wanted])
            for txid, (prev, error) in zip(wanted, results, strict=True):
                if error is None and isinstance(prev, dict):
                    for n, _, amount, _ in utxo_tx(prev).outputs:
                        values[(txid, n)] = amount
        return fee_from_values(tx, values)

    def live_transactions(self, tx_hashes: Collection[str]) -> set[str]:
        """Which of these transactions are still in the mempool or in a block; the others were dropped or
        replaced (RBF, double spend)."""
        if not tx_hashes:
            return set()
        live = set(self.rpc("getrawmempool", False)) & set(tx_hashes)
        unknown = [t for t in tx_hashes if t not in live]
        results = self.rpc_batch([("getrawtransaction", (txid, True)) for txid in unknown])
        for txid, (tx, error) in zip(unknown, results, strict=True):
            # Mined since we looked (the next block scan records it). A block that is not on the best
            # chain any more (reorged, invalidated) still names its transactions in the index: they have 0
            # confirmations there.
            if error is None and tx.get("blockhash") and int(tx.get("confirmations") or 0) > 0:
                live.add(txid)
            elif error is not None and error.get("code") != RPC_INVALID_ADDRESS_OR_KEY:
                self._raise("getrawtransaction", (txid, True), error, self.network_code)
        return live

    def transaction_transfers(
        self, tx_hash: str, watched: Collection[str], now: datetime, *, block_hash: str = ""
    ) -> list[Transfer]:
        """One transaction by its id (`getrawtransaction` verbose: the node needs `txindex=1` for a mined
        transaction that is not its wallet's, unless `block_hash` names the block that holds it), parsed
        as the block scan and the mempool scan parse it."""
        scripts = self.watched_scripts(watched)
        tx = None
        if block_hash:
            try:
                tx = self.rpc("getrawtransaction", tx_hash, True, block_hash)
            except BitcoinRpcError as exc:
                if exc.code not in (RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER):
                    raise
            if tx is not None and not tx.get("in_active_chain", True):
                tx = None  # that block left the best chain: where is the transaction now?
        if tx is None:
            try:
                tx = self.rpc("getrawtransaction", tx_hash, True)
            except BitcoinRpcError as exc:
                if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                    raise TransactionNotFound(
                        f"{self.network_code}: the node knows no transaction {tx_hash} (in a block or its "
                        "mempool; a node without txindex=1 finds only its mempool's)"
                    ) from None
                raise
        if not tx.get("blockhash") or int(tx.get("confirmations") or 0) < 1:
            return list(tx_transfers(self.network_code, utxo_tx(tx), scripts, seen_at=now))
        block = self.rpc("getblock", tx["blockhash"], 1)
        # This transaction's outputs at its position among the block's (as the block scan sees it).
        ref = BlockRef(int(block["height"]), block["hash"], _block_time(block["time"]))
        position = block["tx"].index(tx["txid"])
        return list(tx_transfers(self.network_code, utxo_tx(tx), scripts, block=ref, position=position))


def utxo_tx(tx: dict) -> UtxoTx:
    """A transaction as Bitcoin Core decodes it (`getblock 2`, `getrawtransaction` verbose)."""
    outputs = []
    for vout in tx.get("vout", ()):
        script = vout["scriptPubKey"]
        # `address` in Bitcoin Core 22+, an `addresses` list before (Litecoin Core 0.21)
        address = script.get("address") or next(iter(script.get("addresses") or ()), "")
        outputs.append((int(vout["n"]), script["hex"], to_satoshi(vout["value"]), address))
    inputs = tuple((vin["txid"], int(vin["vout"])) for vin in tx.get("vin", ()) if "coinbase" not in vin)
    fee = tx.get("fee")  # Bitcoin Core 22+ in getblock 2; never in Litecoin Core 0.21
    return UtxoTx(tx["txid"], tuple(outputs), inputs, to_satoshi(fee) if fee is not None else None)

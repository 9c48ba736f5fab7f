"""A small local Esplora REST server backed by a real Bitcoin-family node (litecoind in regtest), for tests
of the Esplora backend. It answers the read-only endpoints the backend uses, in the JSON shape Blockstream
and mempool.space document, translating the node's JSON-RPC (amounts as Decimal, converted exactly to
satoshi). Nothing here needs Django. Typical use::

    with LitecoindNode() as node, EsploraServer(node) as esplora:
        EsploraBackend("litecoin-regtest", esplora.url, hrp="rltc").tip()

Endpoints: /blocks/tip/height, /blocks/tip/hash, /block-height/:height, /block/:hash,
/block/:hash/status, /block/:hash/txids, /block/:hash/txs[/:start_index] (25 per page),
/mempool/txids, /tx/:txid, /tx/:txid/status, /address/:address/utxo. `requests` records the paths asked,
in order.

Transactions are complete as Esplora gives them: each non-coinbase input's `prevout` (the output it spends,
in the `vout` shape) is resolved from the node (`getrawtransaction`, txindex=1) and the transaction carries
its `fee` in satoshi (inputs minus outputs; 0 for a coinbase). A transaction's outputs are read once per
txid, a block once per hash: neither ever changes.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from payments.chains.bitcoin_rpc import to_satoshi

PAGE_SIZE = 25
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8

_SCRIPT_TYPES = {
    "pubkey": "p2pk",
    "pubkeyhash": "p2pkh",
    "scripthash": "p2sh",
    "witness_v0_keyhash": "v0_p2wpkh",
    "witness_v0_scripthash": "v0_p2wsh",
    "witness_v1_taproot": "v1_p2tr",
    "nulldata": "op_return",
    "multisig": "multisig",
}


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


class EsploraServer:
    """An Esplora API on http://127.0.0.1:<free port> over `node` (anything with `rpc(method, *params)`
    returning Decimal amounts and raising an exception with `.code` on an RPC error); a context manager."""

    HOST = "127.0.0.1"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.requests: list[str] = []
        self._lock = threading.Lock()  # one RPC at a time: the node helper is not thread-safe
        self._blocks: dict[str, dict] = {}  # hash -> getblock <hash> 2 (a block's content never changes)
        self._tx_outputs: dict[str, list[dict]] = {}  # txid -> its outputs in Esplora's shape (prevouts)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def __enter__(self) -> EsploraServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> EsploraServer:
        server = ThreadingHTTPServer((self.HOST, 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="esplora-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Esplora server is not running")
        return f"http://{self.HOST}:{self._server.server_address[1]}"

    # node access

    def rpc(self, method: str, *params: Any) -> Any:
        with self._lock:
            return self.node.rpc(method, *params)

    def _rpc_or_404(self, what: str, method: str, *params: Any) -> Any:
        try:
            return self.rpc(method, *params)
        except Exception as exc:
            if getattr(exc, "code", None) in (RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER):
                raise NotFound(f"{what} not found") from exc
            raise

    def _full_block(self, block_hash: str) -> dict:
        block = self._blocks.get(block_hash)
        if block is None:
            block = self._rpc_or_404("Block", "getblock", block_hash, 2)
            self._blocks[block_hash] = block
        return block

    # translation to Esplora's shapes

    @staticmethod
    def block_json(block: dict) -> dict:
        return {
            "id": block["hash"],
            "height": int(block["height"]),
            "version": int(block["version"]),
            "timestamp": int(block["time"]),
            "tx_count": int(block["nTx"]),
            "size": int(block["size"]),
            "weight": int(block["weight"]),
            "merkle_root": block["merkleroot"],
            "previousblockhash": block.get("previousblockhash"),
            "mediantime": int(block["mediantime"]),
            "nonce": int(block["nonce"]),
            "bits": int(block["bits"], 16),
            "difficulty": float(block["difficulty"]),
        }

    @staticmethod
    def status_json(block: dict | None) -> dict:
        if block is None:
            return {"confirmed": False}
        return {
            "confirmed": True,
            "block_height": int(block["height"]),
            "block_hash": block["hash"],
            "block_time": int(block["time"]),
        }

    @staticmethod
    def output_json(entry: dict) -> dict:
        """One output (a `vout` entry of the node's decoded transaction) in Esplora's shape, as Esplora gives
        it both in `vout` and as an input's `prevout`: `scriptpubkey_address` only when the script has one."""
        script = entry["scriptPubKey"]
        out = {
            "scriptpubkey": script["hex"],
            "scriptpubkey_asm": script.get("asm", ""),
            "scriptpubkey_type": _SCRIPT_TYPES.get(script.get("type", ""), "unknown"),
            "value": to_satoshi(entry["value"]),
        }
        # `address` in Bitcoin Core 22+, an `addresses` list in Litecoin Core 0.21
        address = script.get("address") or (script.get("addresses") or [None])[0]
        if address:
            out["scriptpubkey_address"] = address
        return out

    def _outputs(self, txid: str) -> list[dict]:
        """The outputs of transaction `txid` in Esplora's shape, read once (`getrawtransaction`: the node runs
        with txindex=1, and a parent still in the mempool is found there). A transaction's outputs never
        change (its id commits to them), so they are cached per txid, mined or not; the RPC runs outside
        the cache (two threads asking at once at worst read it twice, with the same answer)."""
        outputs = self._tx_outputs.get(txid)
        if outputs is None:
            # an input whose transaction the node cannot find: a server error (502), as the node failed
            tx = self.rpc("getrawtransaction", txid, True)
            ordered = sorted(tx.get("vout", ()), key=lambda entry: int(entry["n"]))
            outputs = [self.output_json(entry) for entry in ordered]
            self._tx_outputs[txid] = outputs
        return outputs

    def prevout_json(self, txid: str, n: int) -> dict:
        """The output an input spends, as Esplora resolves it into `vin[].prevout`."""
        outputs = self._outputs(txid)
        if not 0 <= n < len(outputs):
            raise RuntimeError(f"transaction {txid} has no output {n}")
        return outputs[n]

    def tx_json(self, tx: dict, status: dict) -> dict:
        """A transaction in Esplora's shape: every non-coinbase input's `prevout` resolved from the node, and
        `fee` in satoshi (inputs minus outputs; 0 for a coinbase, as Esplora reports it)."""
        vin = []
        coinbase = False
        for entry in tx.get("vin", ()):
            if "coinbase" in entry:
                coinbase = True
                vin.append(
                    {
                        "txid": "0" * 64,
                        "vout": 0xFFFFFFFF,
                        "prevout": None,
                        "scriptsig": entry["coinbase"],
                        "scriptsig_asm": "",
                        "witness": entry.get("txinwitness", []),
                        "is_coinbase": True,
                        "sequence": int(entry["sequence"]),
                    }
                )
            else:
                vin.append(
                    {
                        "txid": entry["txid"],
                        "vout": int(entry["vout"]),
                        "prevout": self.prevout_json(entry["txid"], int(entry["vout"])),
                        "scriptsig": entry.get("scriptSig", {}).get("hex", ""),
                        "scriptsig_asm": entry.get("scriptSig", {}).get("asm", ""),
                        "witness": entry.get("txinwitness", []),
                        "is_coinbase": False,
                        "sequence": int(entry["sequence"]),
                    }
                )
        vout = [self.output_json(entry) for entry in tx.get("vout", ())]
        if coinbase:
            fee = 0
        else:
            fee = sum(entry["prevout"]["value"] for entry in vin) - sum(out["value"] for out in vout)
        return {
            "txid": tx["txid"],
            "version": int(tx["version"]),
            "locktime": int(tx["locktime"]),
            "vin": vin,
            "vout": vout,
            "size": int(tx["size"]),
            "weight": int(tx.get("weight", 4 * int(tx["vsize"]))),
            "fee": fee,
            "status": status,
        }

    def _tx_status(self, tx: dict) -> dict:
        """Confirmed only if the node puts the transaction's block on its best chain (with txindex, a tx of
        an invalidated block still names that block, with 0 confirmations)."""
        block_hash = tx.get("blockhash")
        if not block_hash or int(tx.get("confirmations", 0)) <= 0:
            return {"confirmed": False}
        return self.status_json(self._full_block(block_hash))

    # routing

    def routes(self) -> list[tuple[re.Pattern[str], Callable[..., Any]]]:
        hex64 = "([0-9a-fA-F]{64})"
        return [
            (re.compile(r"/blocks/tip/height"), lambda: str(int(self.rpc("getblockcount")))),
            (re.compile(r"/blocks/tip/hash"), lambda: self.rpc("getbestblockhash")),
            (re.compile(r"/block-height/(\d+)"), self._block_height),
            (re.compile(rf"/block/{hex64}"), lambda h: self.block_json(self._full_block(h))),
            (re.compile(rf"/block/{hex64}/status"), self._block_status),
            (
                re.compile(rf"/block/{hex64}/txids"),
                lambda h: [tx["txid"] for tx in self._full_block(h)["tx"]],
            ),
            (re.compile(rf"/block/{hex64}/txs(?:/(\d+))?"), self._block_txs),
            (re.compile(r"/mempool/txids"), lambda: self.rpc("getrawmempool", False)),
            (re.compile(rf"/tx/{hex64}"), self._tx),
            (re.compile(rf"/tx/{hex64}/status"), lambda t: self._tx_status(self._raw_tx(t))),
            (re.compile(r"/address/([0-9a-zA-Z]{14,90})/utxo"), self._address_utxo),
        ]

    def _address_utxo(self, address: str) -> list[dict]:
        """As Esplora answers it: the address's unspent outputs, confirmed (the node's UTXO set) and in the
        mempool, leaving out those a mempool transaction already spends."""
        scan = self.rpc("scantxoutset", "start", [f"addr({address})"])
        mempool = self.rpc("getrawmempool", True)
        spent, unconfirmed = set(), []
        for txid in mempool:
            tx = self.rpc("getrawtransaction", txid, True)
            spent |= {(i["txid"], int(i["vout"])) for i in tx.get("vin", ()) if "txid" in i}
            for out in tx["vout"]:
                if out["scriptPubKey"].get("address") == address or address in out["scriptPubKey"].get(
                    "addresses", ()
                ):
                    unconfirmed.append((txid, int(out["n"]), out["value"]))
        utxos = []
        for u in scan.get("unspents", ()):
            if (u["txid"], int(u["vout"])) in spent:
                continue
            block_hash = self.rpc("getblockhash", int(u["height"]))
            status = {"confirmed": True, "block_height": int(u["height"]), "block_hash": block_hash}
            utxos.append(
                {
                    "txid": u["txid"],
                    "vout": int(u["vout"]),
                    "value": to_satoshi(u["amount"]),
                    "status": status,
                }
            )
        for txid, n, value in unconfirmed:
            if (txid, n) not in spent:
                utxos.append(
                    {"txid": txid, "vout": n, "value": to_satoshi(value), "status": {"confirmed": False}}
                )
        return utxos

    def _block_height(self, height: str) -> str:
        return self._rpc_or_404("Block", "getblockhash", int(height))

    def _block_status(self, block_hash: str) -> dict:
        header = self._rpc_or_404("Block", "getblockheader", block_hash)
        in_best = int(header["confirmations"]) > 0
        return {
            "in_best_chain": in_best,
            "height": int(header["height"]),
            "next_best": header.get("nextblockhash") if in_best else None,
        }

    def _block_txs(self, block_hash: str, start: str | None) -> list[dict]:
        index = int(start or 0)
        if index % PAGE_SIZE:
            raise BadRequest(f"start index must be a multiple of {PAGE_SIZE}")
        block = self._full_block(block_hash)
        if index >= len(block["tx"]):
            raise NotFound("start index out of range")
        status = self.status_json(block)  # a block's page says the block is confirmed, as Esplora does
        return [self.tx_json(tx, status) for tx in block["tx"][index : index + PAGE_SIZE]]

    def _raw_tx(self, txid: str) -> dict:
        return self._rpc_or_404("Transaction", "getrawtransaction", txid, True)

    def _tx(self, txid: str) -> dict:
        tx = self._raw_tx(txid)
        return self.tx_json(tx, self._tx_status(tx))

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for a GET of `path`."""
        self.requests.append(path)
        for pattern, view in self.routes():
            match = pattern.fullmatch(path)
            if match is None:
                continue
            try:
                result = view(*match.groups())
            except NotFound as exc:
                return 404, "text/plain", str(exc).encode()
            except BadRequest as exc:
                return 400, "text/plain", str(exc).encode()
            except Exception as exc:  # the node failed: a server error, as a real Esplora would answer
                return 502, "text/plain", f"node error: {exc}".encode()
            if isinstance(result, str):
                return 200, "text/plain", result.encode()
            return 200, "application/json", json.dumps(result).encode()
        return 404, "text/plain", b"Not found"


def _handler_for(server: EsploraServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, content_type, body = server.answer(self.path.split("?", 1)[0])
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            pass

    return Handler

"""Bitcoin-family chains through an Esplora REST API (Blockstream's electrs/esplora, mempool.space): outputs
paying watched native-segwit (bech32) addresses, in blocks and in the mempool.

Blocks are read by hash (`/block-height/:height` once, then `/block/:hash` and its transaction pages
`/block/:hash/txs/:start`, 25 per page), so a block replaced while it is being paged cannot mix two
blocks' transactions. Outputs are matched on their `scriptpubkey` hex against the watched addresses'
witness scripts, as the Core-RPC backend does; Esplora's `value` is already an integer in satoshi.

`base_url` is the API root, e.g. `https://blockstream.info/api`, `https://mempool.space/api` or
`https://blockstream.info/testnet/api`. Plain urllib, no extra dependency.

The mempool is read as `/mempool/txids`, then `/tx/:txid` once per new transaction (cached per instance):
right for a self-hosted Esplora, too many requests for a public instance's full mainnet mempool.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

from .base import BlockRef, ChainNodeError, Spend, SpendWatch, TransactionNotFound, Transfer
from .bitcoin_rpc import output_script_hex
from .redaction import redact_url
from .utxo import (
    TransfersFromActivity,
    UtxoTx,
    block_activity,
    fee_from_values,
    mempool_activity,
    tx_transfers,
)

PAGE_SIZE = 25  # Esplora's /block/:hash/txs/:start_index page; start_index must be a multiple of it


class EsploraError(ChainNodeError):
    """The Esplora server could not be reached, timed out, or answered with an HTTP error or bad data.
    `status` is the HTTP status when there was one (404: no such block or transaction)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def _block_time(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=UTC)


def _satoshi(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EsploraError(f"{where}: value {value!r} is not an integer amount in satoshi")
    if value < 0:
        raise EsploraError(f"{where}: negative value {value!r}")
    return value


class EsploraBackend(TransfersFromActivity):
    def __init__(self, network_code: str, base_url: str, *, hrp: str, timeout_s: float = 10):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/path], not {redact_url(base_url)!r}")
        self.network_code = network_code
        self.hrp = hrp
        self.timeout_s = timeout_s
        self.base_url = base_url.rstrip("/")
        # errors name the request by its path under the API root, never the root's credentials or key
        self._where = redact_url(self.base_url)
        # txid -> the transaction as the matching needs it: a mempool transaction is read once
        self._mempool_txs: dict[str, UtxoTx] = {}

    # --- HTTP ------------------------------------------------------------------------------------------

    def _get(self, path: str) -> bytes:
        url = self.base_url + path
        request = urllib.request.Request(url, headers={"Accept": "application/json, text/plain"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read()[:300].decode(errors="replace").strip()
            except OSError:
                detail = ""
            raise EsploraError(
                f"{self.network_code}: GET {self._where} {path}: HTTP {exc.code}"
                + (f": {detail}" if detail else ""),
                status=exc.code,
            ) from exc
        except (TimeoutError, OSError, urllib.error.URLError) as exc:  # URLError wraps refusals, DNS, TLS
            reason = getattr(exc, "reason", exc)
            raise EsploraError(
                f"{self.network_code}: cannot reach Esplora at {self._where} ({path}): {reason}"
            ) from exc

    def _text(self, path: str) -> str:
        return self._get(path).decode().strip()

    def _json(self, path: str) -> Any:
        body = self._get(path)
        try:
            return json.loads(body, parse_float=Decimal)
        except ValueError as exc:
            raise EsploraError(
                f"{self.network_code}: GET {self._where} {path}: not JSON: {body[:300]!r}"
            ) from exc

    def _int(self, path: str) -> int:
        text = self._text(path)
        try:
            return int(text)
        except ValueError as exc:
            raise EsploraError(
                f"{self.network_code}: GET {self._where} {path}: not a number: {text!r}"
            ) from exc

    # --- ChainBackend ---------------------------------------------------------------------------------

    def tip(self) -> BlockRef:
        return self._ref(self._block(self._text("/blocks/tip/hash")))

    def block_ref(self, height: int) -> BlockRef:
        return self._ref(self._block(self._hash_at(height)))

    def _hash_at(self, height: int) -> str:
        return self._text(f"/block-height/{int(height)}")

    def _block(self, block_hash: str) -> dict:
        block = self._json(f"/block/{quote(block_hash)}")
        if not isinstance(block, dict) or block.get("id") != block_hash:
            raise EsploraError(f"{self.network_code}: /block/{block_hash}: unexpected reply {block!r:.300}")
        return block

    @staticmethod
    def _ref(block: dict) -> BlockRef:
        return BlockRef(height=int(block["height"]), hash=block["id"], time=_block_time(block["timestamp"]))

    def watched_scripts(self, watched: Collection[str]) -> dict[str, str]:
        """scriptpubkey hex -> the watched address as given (so a Transfer names it as the gateway does)."""
        return {output_script_hex(address, self.hrp): address for address in watched}

    def balances(
        self, addresses: Collection[str], token_contract: str = "", *, height: int | None = None
    ) -> tuple[int, dict[str, int]]:
        """Each address's `/address/<a>/utxo`, confirmed outputs up to the tip read first (a block found
        meanwhile is left out, as a node's scan at that height would)."""
        height = int(self._text("/blocks/tip/height"))
        held: dict[str, int] = {}
        if token_contract:
            return height, held
        for address in addresses:
            utxos = self._json(f"/address/{quote(address)}/utxo")
            if not isinstance(utxos, list):
                raise EsploraError(
                    f"{self.network_code}: /address/{address}/utxo: unexpected reply {utxos!r:.300}"
                )
            total = sum(
                int(u["value"])
                for u in utxos
                if (u.get("status") or {}).get("confirmed") and int(u["status"]["block_height"]) <= height
            )
            if total:
                held[address] = total
        return height, held

    def block_transactions(self, block_hash: str, tx_count: int) -> Iterator[dict]:
        """The transactions of one block, in block order, page by page."""
        seen = 0
        for start in range(0, tx_count, PAGE_SIZE):
            page = self._json(f"/block/{quote(block_hash)}/txs/{start}")
            if not isinstance(page, list) or not page:
                raise EsploraError(
                    f"{self.network_code}: /block/{block_hash}/txs/{start}: expected a non-empty list of "
                    f"transactions (block has {tx_count}), got {page!r:.300}"
                )
            yield from page
            seen += len(page)
        if seen != tx_count:
            raise EsploraError(
                f"{self.network_code}: block {block_hash} lists {tx_count} transactions, pages gave {seen}"
            )

    def activity(
        self, watched: Collection[str], spends: SpendWatch, start: int, end: int
    ) -> Iterator[Transfer | Spend]:
        scripts = self.watched_scripts(watched)
        if (not scripts and not (spends and spends.outpoints)) or end < start:
            return
        outpoints = dict(spends.outpoints) if spends else None
        for height in range(start, end + 1):
            block_hash = self._hash_at(height)
            block = self._block(block_hash)
            if int(block["height"]) != height:
                raise EsploraError(
                    f"{self.network_code}: block {block_hash} is at {block['height']}, not {height}"
                )
            txs = self.block_transactions(block_hash, int(block["tx_count"]))
            yield from block_activity(
                self.network_code,
                BlockRef(height, block_hash, _block_time(block["timestamp"])),
                (self._utxo_tx(tx) for tx in txs),
                scripts,
                outpoints,
                fee_from_values,
            )

    def pending_activity(
        self, watched: Collection[str], spends: SpendWatch, now: datetime
    ) -> Iterator[Transfer | Spend]:
        scripts = self.watched_scripts(watched)
        if not scripts and not (spends and spends.outpoints):
            return
        txids = self._mempool_txids()
        current = set(txids)
        for txid in [t for t in self._mempool_txs if t not in current]:
            del self._mempool_txs[txid]  # mined or dropped: forget it
        for txid in txids:
            if txid not in self._mempool_txs:
                try:
                    tx = self._json(f"/tx/{quote(txid)}")
                except EsploraError as exc:
                    if exc.status == 404:
                        continue  # left the mempool since /mempool/txids: not pending any more
                    raise
                if not isinstance(tx, dict) or tx.get("txid") != txid:
                    raise EsploraError(f"{self.network_code}: /tx/{txid}: unexpected reply {tx!r:.300}")
                if (tx.get("status") or {}).get("confirmed"):
                    continue  # mined since /mempool/txids: the block scan records it
                self._mempool_txs[txid] = self._utxo_tx(tx)
        pending = (self._mempool_txs[txid] for txid in txids if txid in self._mempool_txs)
        outpoints = dict(spends.outpoints) if spends else None
        yield from mempool_activity(self.network_code, pending, scripts, outpoints, fee_from_values, now)

    def live_transactions(self, tx_hashes: Collection[str]) -> set[str]:
        """Which of these transactions are still in the mempool or in a block; the others were dropped or
        replaced (RBF, double spend)."""
        if not tx_hashes:
            return set()
        live = set(self._mempool_txids()) & set(tx_hashes)
        for txid in [t for t in tx_hashes if t not in live]:
            try:
                status = self._json(f"/tx/{quote(txid)}/status")
            except EsploraError as exc:
                if exc.status == 404:
                    continue  # unknown to the server: dropped
                raise
            if isinstance(status, dict) and status.get("confirmed"):
                live.add(txid)  # mined since we looked; the next block scan records it
        return live

    def transaction_transfers(
        self, tx_hash: str, watched: Collection[str], now: datetime, *, block_hash: str = ""
    ) -> list[Transfer]:
        """One transaction by its id (`/tx/<id>`, its block's `/txids` for its position), parsed as the
        block scan and the mempool scan parse it."""
        scripts = self.watched_scripts(watched)
        try:
            tx = self._json(f"/tx/{quote(tx_hash)}")
        except EsploraError as exc:
            if exc.status in (400, 404):
                raise TransactionNotFound(
                    f"{self.network_code}: the server knows no transaction {tx_hash}"
                ) from None
            raise
        if not isinstance(tx, dict) or tx.get("txid") != tx_hash:
            raise EsploraError(f"{self.network_code}: /tx/{tx_hash}: unexpected reply {tx!r:.300}")
        status = tx.get("status") or {}
        if not status.get("confirmed"):
            return list(tx_transfers(self.network_code, self._utxo_tx(tx), scripts, seen_at=now))
        block_hash = status["block_hash"]
        txids = self._json(f"/block/{quote(block_hash)}/txids")
        if not isinstance(txids, list) or tx_hash not in txids:
            raise EsploraError(f"{self.network_code}: block {block_hash} does not list {tx_hash}")
        ref = BlockRef(int(status["block_height"]), block_hash, _block_time(status["block_time"]))
        return list(
            tx_transfers(
                self.network_code, self._utxo_tx(tx), scripts, block=ref, position=txids.index(tx_hash)
            )
        )

    # --- helpers --------------------------------------------------------------------------------------

    def _mempool_txids(self) -> list[str]:
        txids = self._json("/mempool/txids")
        if not isinstance(txids, list):
            raise EsploraError(f"{self.network_code}: /mempool/txids: unexpected reply {txids!r:.300}")
        return txids

    def _utxo_tx(self, tx: dict) -> UtxoTx:
        """An Esplora transaction as the matching needs it: outputs (`value` is already satoshi), the
        outpoints its inputs spend, and its `fee` (Esplora resolves every input's prevout)."""
        txid = str(tx.get("txid"))
        outputs = []
        for n, vout in enumerate(tx.get("vout", ())):
            where = f"{self.network_code}: tx {txid} output {n}"
            script = str(vout.get("scriptpubkey", "")).lower()
            address = str(vout.get("scriptpubkey_address") or "")
            outputs.append((n, script, _satoshi(vout.get("value"), where), address))
        inputs = tuple(
            (str(vin["txid"]), int(vin["vout"])) for vin in tx.get("vin", ()) if not vin.get("is_coinbase")
        )
        fee = tx.get("fee")
        return UtxoTx(
            txid,
            tuple(outputs),
            inputs,
            _satoshi(fee, f"{self.network_code}: tx {txid} fee") if fee is not None else None,
        )

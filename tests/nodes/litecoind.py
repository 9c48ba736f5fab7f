"""A real Litecoin Core node in regtest (a Bitcoin Core fork: same JSON-RPC, segwit, bech32 HRP `rltc`)
for tests of the Core-RPC backend. Nothing here needs Django. Typical use::

    with LitecoindNode() as node:          # 101 blocks mined to its wallet: coins are spendable
        txid = node.send("rltc1q...", "0.5")
        node.mine(1)

The daemon is Debian's `litecoind` package (`apt-get install litecoind`); its `/usr/bin/litecoind` is a
wrapper that creates ~/.litecoin, so the real binary in /usr/lib/litecoin runs with a temporary datadir.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from devchain.process import free_port, signal_group

from .apt import ensure_installed, executable

LITECOIND_CANDIDATES = ("/usr/lib/litecoin/litecoind",)
REGTEST_HRP = "rltc"
RPC_IN_WARMUP = -28


class LitecoindError(RuntimeError):
    """litecoind could not be installed or started, or an RPC call to it failed."""

    def __init__(self, message: str, *, code: int | None = None):
        super().__init__(message)
        self.code = code


# --- installation ------------------------------------------------------------------------------------


def litecoind_binary() -> Path:
    """The litecoind daemon (``$LITECOIND`` or /usr/lib/litecoin/litecoind), installing the Debian package
    if it is missing; RuntimeError (LitecoindError) if that is not possible."""
    override = os.environ.get("LITECOIND")
    find = executable(*([override] if override else []), *LITECOIND_CANDIDATES)
    return ensure_installed(["litecoind"], find, error=LitecoindError)


# --- the node ----------------------------------------------------------------------------------------


class LitecoindNode:
    """litecoind in regtest on 127.0.0.1 (RPC only, no P2P), with a temporary datadir and a legacy wallet
    ``w`` holding mature coins; a context manager. ``url`` carries the RPC credentials."""

    HOST = "127.0.0.1"
    WALLET = "w"

    def __init__(self, *, startup_timeout: float = 30.0, initial_blocks: int = 101, extra_args=()) -> None:
        self.startup_timeout = startup_timeout
        self.initial_blocks = initial_blocks
        self.extra_args = list(extra_args)
        self.rpc_user = "gateway"
        self.rpc_password = secrets.token_hex(16)
        self.port: int | None = None
        self.datadir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.mining_address: str | None = None
        self._request_id = 0

    # lifecycle

    def __enter__(self) -> LitecoindNode:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _config(self, port: int) -> str:
        return "\n".join(
            [
                "regtest=1",
                "server=1",
                "listen=0",
                "dnsseed=0",
                "discover=0",
                "upnp=0",
                "txindex=1",
                "fallbackfee=0.0001",
                "mempoolreplacement=1",
                "printtoconsole=0",
                "[regtest]",
                "vbparams=mweb:-2:0",  # without it MWEB activates at height 432 and mining fails
                f"rpcbind={self.HOST}",
                f"rpcallowip={self.HOST}",
                f"rpcport={port}",
                f"rpcuser={self.rpc_user}",
                f"rpcpassword={self.rpc_password}",
                "",
            ]
        )

    def start(self) -> LitecoindNode:
        if self.process is not None:
            raise LitecoindError("this LitecoindNode is already running")
        binary = litecoind_binary()
        last_error: LitecoindError | None = None
        for _ in range(3):  # a port picked by free_port() can be taken before litecoind binds it
            port = free_port(self.HOST)
            try:
                self._launch(binary, port)
                break
            except LitecoindError as exc:
                last_error = exc
                self.stop()
        else:
            assert last_error is not None
            raise last_error
        self.rpc("createwallet", self.WALLET, False, False, "", False, False)
        self.mining_address = self.new_address()
        if self.initial_blocks:
            self.mine(self.initial_blocks)
        return self

    def _launch(self, binary: Path, port: int) -> None:
        self.datadir = Path(tempfile.mkdtemp(prefix="litecoind-regtest-"))
        (self.datadir / "litecoin.conf").write_text(self._config(port))
        self.port = port
        self.process = subprocess.Popen(
            [str(binary), f"-datadir={self.datadir}", *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise LitecoindError(
                    f"litecoind exited with code {self.process.returncode} before answering on port {port}: "
                    f"{stderr.strip()[-2000:]} {self._log_tail()}"
                )
            try:
                self.rpc("getblockchaininfo", timeout=2.0)
                return
            except LitecoindError as exc:
                if exc.code not in (None, RPC_IN_WARMUP):
                    raise
            if time.monotonic() > deadline:
                raise LitecoindError(
                    f"litecoind did not answer RPC on port {port} within {self.startup_timeout} s: "
                    f"{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self) -> str:
        log = self.datadir / "regtest" / "debug.log" if self.datadir else None
        if log is None or not log.exists():
            return "(no debug.log)"
        return "debug.log: " + log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(LitecoindError):
                    self.rpc("stop", timeout=5.0)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    signal_group(process, signal.SIGTERM)
                    try:
                        process.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        signal_group(process, signal.SIGKILL)
                        process.wait(timeout=5)
            if process.stderr is not None:
                process.stderr.close()
        datadir, self.datadir = self.datadir, None
        if datadir is not None:
            shutil.rmtree(datadir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # access

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LitecoindError("litecoind has not been started")
        return f"http://{self.HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The RPC URL with the credentials in it (what a Network.rpc_url holds)."""
        if self.port is None:
            raise LitecoindError("litecoind has not been started")
        return f"http://{self.rpc_user}:{self.rpc_password}@{self.HOST}:{self.port}"

    def rpc(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        """A raw JSON-RPC call (amounts as Decimal); returns ``result``, raises LitecoindError on an error."""
        self._request_id += 1
        body = json.dumps(
            {"jsonrpc": "1.0", "id": self._request_id, "method": method, "params": list(params)},
            default=str,  # Decimal amounts as strings, which Core accepts exactly
        ).encode()
        token = base64.b64encode(f"{self.rpc_user}:{self.rpc_password}".encode()).decode()
        request = urllib.request.Request(
            self.base_url,
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:  # RPC errors come back as HTTP 404/500 with a JSON body
            raw = exc.read()
            if exc.code in (401, 403) or not raw:
                raise LitecoindError(f"{method}: HTTP {exc.code} from litecoind") from exc
        except (OSError, urllib.error.URLError) as exc:
            raise LitecoindError(f"{method}: cannot reach litecoind at {self.base_url}: {exc}") from exc
        reply = json.loads(raw, parse_float=Decimal)
        error = reply.get("error")
        if error is not None:
            raise LitecoindError(
                f"{method}{list(params)!r} failed: {error.get('message')} (code {error.get('code')})",
                code=error.get("code"),
            )
        return reply.get("result")

    def new_address(self) -> str:
        """A fresh bech32 (rltc1...) address of the node's wallet."""
        return self.rpc("getnewaddress", "", "bech32")

    def height(self) -> int:
        return int(self.rpc("getblockcount"))

    def mine(self, n: int = 1, address: str | None = None) -> list[str]:
        """Mine ``n`` blocks to ``address`` (default: the wallet's mining address); returns their hashes."""
        return self.rpc("generatetoaddress", n, address or self.mining_address)

    def send(self, address: str, amount: str, *, replaceable: bool = False) -> str:
        """``sendtoaddress`` ``amount`` (coins, a decimal string: Core takes amounts as JSON strings too, so
        nothing goes through a float) to ``address``; returns the txid."""
        return self.rpc("sendtoaddress", address, str(Decimal(amount)), "", "", False, replaceable)

    def conflicting_transaction(self, txid: str) -> str:
        """A signed transaction spending the same inputs as `txid`, paying a new address of the node's own
        wallet instead, with a fee of 0.01 (the customer taking the payment back: an RBF replacement when
        `txid` signalled it, a double spend for a miner otherwise)."""
        original = self.rpc("getrawtransaction", txid, True)
        inputs = [{"txid": vin["txid"], "vout": vin["vout"]} for vin in original["vin"]]
        spent = sum(
            Decimal(str(self.rpc("getrawtransaction", i["txid"], True)["vout"][i["vout"]]["value"]))
            for i in inputs
        )
        raw = self.rpc(
            "createrawtransaction", inputs, {self.new_address(): str(spent - Decimal("0.01"))}, 0, True
        )
        return self.rpc("signrawtransactionwithwallet", raw)["hex"]

    def __repr__(self) -> str:
        return f"<LitecoindNode {self.base_url if self.port else 'not started'}>"

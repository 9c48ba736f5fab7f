"""A real local EVM node (anvil, from npm) and a real ERC-20 token (TestUSDC, 6 decimals) for tests.

Nothing here needs Django. Typical use::

    with AnvilNode(chain_id=31337) as node:
        token = deploy_token(node.w3, node.accounts[0])
        token_transfer(node.w3, token, node.accounts[0], "0x...", 49_500_000)  # after minting
        node.mine(12)

The anvil binary and solc-js come from ``tools/chain`` (``npm ci`` there); both are installed on first use.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

from devchain.process import file_lock, free_port, signal_group

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAIN_DIR = REPO_ROOT / "tools" / "chain"
NODE_MODULES = CHAIN_DIR / "node_modules"
ANVIL_BIN = NODE_MODULES / ".bin" / "anvil"
CONTRACT_SOURCE = CHAIN_DIR / "contracts" / "TestUSDC.sol"
COMPILE_SCRIPT = CHAIN_DIR / "compile.js"
TOKEN_ARTIFACT = CHAIN_DIR / "build" / "TestUSDC.json"

TOKEN_DECIMALS = 6
TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()

_NPM_INSTALL_TIMEOUT = 300
_COMPILE_TIMEOUT = 120


class AnvilError(RuntimeError):
    """anvil could not be installed or started, or an RPC call to it failed."""


# --- installation ------------------------------------------------------------------------------------


def _platform_package() -> str | None:
    """The npm package holding anvil's native binary for this machine (what ``.bin/anvil`` would run)."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    plat = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform)
    if arch is None or plat is None:
        return None
    return f"@foundry-rs/anvil-{plat}-{arch}"


def _native_anvil() -> Path | None:
    package = _platform_package()
    if package is None:
        return None
    binary = NODE_MODULES / package / "bin" / ("anvil.exe" if sys.platform == "win32" else "anvil")
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def _deps_installed() -> bool:
    return ANVIL_BIN.exists() and (NODE_MODULES / "solc" / "package.json").is_file()


def ensure_node_modules() -> None:
    """Install tools/chain's npm dependencies (anvil, solc-js) if they are missing."""
    if _deps_installed():
        return
    with file_lock("npm"):
        if _deps_installed():  # another process installed them while we waited
            return
        npm = shutil.which("npm")
        if npm is None:
            raise AnvilError(
                f"anvil is not installed in {NODE_MODULES} and npm is not on PATH: install Node.js/npm, "
                f"then run `npm ci` in {CHAIN_DIR}"
            )
        lock = CHAIN_DIR / "package-lock.json"
        command = (
            [npm, "ci", "--no-audit", "--no-fund"]
            if lock.exists()
            else [npm, "install", "--no-audit", "--no-fund"]
        )
        try:
            result = subprocess.run(
                command, cwd=CHAIN_DIR, capture_output=True, text=True, timeout=_NPM_INSTALL_TIMEOUT
            )
        except subprocess.TimeoutExpired as exc:
            raise AnvilError(f"`{' '.join(command)}` in {CHAIN_DIR} timed out after {exc.timeout} s") from exc
        if result.returncode != 0:
            raise AnvilError(
                f"`{' '.join(command)}` in {CHAIN_DIR} failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
    if not _deps_installed():
        raise AnvilError(f"`npm` ran in {CHAIN_DIR} but {ANVIL_BIN} or solc-js is still missing")


def anvil_binary() -> Path:
    """Path to ``tools/chain/node_modules/.bin/anvil``, installing the npm dependencies if missing."""
    ensure_node_modules()
    return ANVIL_BIN


def anvil_command() -> list[str]:
    """The command that starts anvil: its native binary when found (no Node wrapper process in between,
    so signals reach anvil itself), else the ``.bin/anvil`` wrapper."""
    anvil_binary()
    native = _native_anvil()
    return [str(native)] if native is not None else [str(ANVIL_BIN)]


# --- the node ----------------------------------------------------------------------------------------


def _json_rpc(url: str, method: str, params: Sequence[Any] | None = None, timeout: float = 30.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params or [])}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if reply.get("error") is not None:
        raise AnvilError(f"{method}{list(params or [])!r} failed: {reply['error']}")
    return reply.get("result")


class AnvilNode:
    """An anvil process on 127.0.0.1 and a free port; use as a context manager.

    ``block_time`` (seconds) mines on an interval as well as on each transaction unless ``no_mining`` is set;
    ``no_mining=True`` disables automine, so transactions stay in the mempool until ``mine()``.
    """

    HOST = "127.0.0.1"

    def __init__(
        self,
        chain_id: int = 31337,
        *,
        block_time: float | None = None,
        no_mining: bool = False,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        self.chain_id = chain_id
        self.block_time = block_time
        self.no_mining = no_mining
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._w3: Web3 | None = None
        self._accounts: list[str] | None = None

    # lifecycle

    def __enter__(self) -> AnvilNode:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> AnvilNode:
        if self.process is not None:
            raise AnvilError("this AnvilNode is already running")
        command = anvil_command()
        # A port picked by free_port() can be taken by someone else before anvil binds it: retry.
        attempts = 1 if self._requested_port is not None else 3
        last_error: AnvilError | None = None
        for _ in range(attempts):
            port = self._requested_port or free_port(self.HOST)
            try:
                self._launch(command, port)
                return self
            except AnvilError as exc:
                last_error = exc
                self.stop()
        assert last_error is not None
        raise last_error

    def _args(self, port: int) -> list[str]:
        args = ["--host", self.HOST, "--port", str(port), "--chain-id", str(self.chain_id), "--silent"]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        if self.no_mining:
            args.append("--no-mining")
        return args + self.extra_args

    def _launch(self, command: list[str], port: int) -> None:
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [*command, *self._args(port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() takes any child with it
        )
        self.port = port
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise AnvilError(
                    f"anvil exited with code {self.process.returncode} before answering on {self.url}: "
                    f"{self._output()}"
                )
            try:
                answered = int(_json_rpc(self.url, "eth_chainId", timeout=1.0), 16)
            except (OSError, urllib.error.URLError, ValueError, AnvilError):
                answered = None
            if answered is not None:
                if answered != self.chain_id:
                    raise AnvilError(f"{self.url} answered chain id {answered}, expected {self.chain_id}")
                return
            if time.monotonic() > deadline:
                raise AnvilError(
                    f"anvil did not answer eth_chainId on {self.url} within {self.startup_timeout} s: "
                    f"{self._output()}"
                )
            time.sleep(0.02)

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace").strip() or "(no output)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._w3 = None
        self._accounts = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # access

    @property
    def url(self) -> str:
        if self.port is None:
            raise AnvilError("anvil has not been started")
        return f"http://{self.HOST}:{self.port}"

    @property
    def w3(self) -> Web3:
        if self._w3 is None:
            self._w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 30}))
        return self._w3

    @property
    def accounts(self) -> list[str]:
        """anvil's unlocked, funded dev accounts (checksummed), from ``eth_accounts``."""
        if self._accounts is None:
            self._accounts = [Web3.to_checksum_address(a) for a in self.rpc("eth_accounts")]
        return self._accounts

    def rpc(self, method: str, params: Sequence[Any] | None = None) -> Any:
        """A raw JSON-RPC call; returns ``result``, raises :class:`AnvilError` on an RPC error.

        Positional params only, e.g. ``rpc("anvil_reorg", [2, []])``, ``rpc("evm_revert", [snapshot_id])``.
        """
        return _json_rpc(self.url, method, params)

    def mine(self, n: int = 1) -> int:
        """Mine ``n`` blocks now; returns the new head height."""
        self.rpc("anvil_mine", [hex(n)])
        return self.block_number()

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block_hash(self, height: int) -> str | None:
        block = self.rpc("eth_getBlockByNumber", [hex(height), False])
        return block["hash"] if block else None

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> bool:
        return bool(self.rpc("evm_revert", [snapshot_id]))

    def reorg(self, depth: int, txs: Sequence[Sequence[Any]] = ()) -> None:
        """Replace the last ``depth`` blocks (height unchanged); transactions not listed in ``txs``
        (``[[raw_signed_tx_hex, block_offset], ...]``) are dropped, not returned to the mempool."""
        self.rpc("anvil_reorg", [depth, [list(t) for t in txs]])

    def __repr__(self) -> str:
        state = self.url if self.port else "not started"
        return f"<AnvilNode chain_id={self.chain_id} {state}>"


# --- the token ---------------------------------------------------------------------------------------


def _artifact_stale() -> bool:
    if not TOKEN_ARTIFACT.exists():
        return True
    built = TOKEN_ARTIFACT.stat().st_mtime
    return built < CONTRACT_SOURCE.stat().st_mtime or built < COMPILE_SCRIPT.stat().st_mtime


def compiled_token() -> tuple[list[dict[str, Any]], str]:
    """(abi, bytecode) of TestUSDC, compiling with ``node tools/chain/compile.js`` if missing or stale."""
    if _artifact_stale():
        ensure_node_modules()
        with file_lock("compile"):
            if _artifact_stale():
                node = shutil.which("node")
                if node is None:
                    raise AnvilError(f"node is not on PATH: cannot compile {CONTRACT_SOURCE}")
                result = subprocess.run(
                    [node, str(COMPILE_SCRIPT)],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=_COMPILE_TIMEOUT,
                )
                if result.returncode != 0:
                    raise AnvilError(
                        f"compiling {CONTRACT_SOURCE} failed (exit {result.returncode}):\n"
                        f"{result.stdout}\n{result.stderr}"
                    )
    artifact = json.loads(TOKEN_ARTIFACT.read_text())
    return artifact["abi"], artifact["bytecode"]


def token_units(amount: str | int, decimals: int = TOKEN_DECIMALS) -> int:
    """'49.5' -> 49_500_000 base units (exact, via Decimal)."""
    from decimal import Decimal

    value = Decimal(str(amount)) * (Decimal(10) ** decimals)
    if value != value.to_integral_value():
        raise ValueError(f"{amount} has more than {decimals} decimals")
    return int(value)


def _wait(w3: Web3, tx_hash: Any, timeout: float = 30) -> Any:
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    if receipt["status"] != 1:
        raise AnvilError(f"transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


def deploy_token(w3: Web3, deployer: str) -> Contract:
    """Deploy TestUSDC from ``deployer`` (an unlocked node account) and return the contract instance."""
    abi, bytecode = compiled_token()
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    tx_hash = factory.constructor().transact({"from": deployer})
    receipt = _wait(w3, tx_hash)
    return w3.eth.contract(address=receipt["contractAddress"], abi=abi)


def mint(w3: Web3, token: Contract, sender: str, to: str, amount: int) -> str:
    """Mint ``amount`` base units to ``to``; returns the tx hash (0x-prefixed) once mined."""
    tx_hash = token.functions.mint(Web3.to_checksum_address(to), amount).transact({"from": sender})
    _wait(w3, tx_hash)
    return tx_hash.to_0x_hex()


def token_transfer(w3: Web3, token: Contract, sender: str, to: str, amount: int, *, wait: bool = True) -> str:
    """Transfer ``amount`` base units from ``sender`` to ``to``; returns the tx hash (0x-prefixed).

    Waits for the receipt unless ``wait=False`` (needed with ``no_mining=True``: mine first)."""
    tx_hash = token.functions.transfer(Web3.to_checksum_address(to), amount).transact({"from": sender})
    if wait:
        _wait(w3, tx_hash)
    return tx_hash.to_0x_hex()


def send_eth(w3: Web3, sender: str, to: str, wei: int, *, wait: bool = True) -> str:
    """Send ``wei`` of the native coin; returns the tx hash (0x-prefixed)."""
    tx_hash = w3.eth.send_transaction({"from": sender, "to": Web3.to_checksum_address(to), "value": wei})
    if wait:
        _wait(w3, tx_hash)
    return tx_hash.to_0x_hex()


def address_topic(address: str) -> str:
    """An address as a 32-byte log topic: '0x' + 24 zeros + the 40 lowercase hex digits."""
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")

"""Process plumbing shared by the local chain nodes (anvil, litecoind): ports, locks, signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """An exclusive lock across processes (parallel test workers), e.g. around an install or a compile."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, races are then the caller's problem
        yield
        return
    with open(Path(tempfile.gettempdir()) / f"gateway-chain-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the process group started with start_new_session (pgid == pid), or the process alone."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError, AttributeError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)

"""Install a Debian package a test needs, once per machine (a file lock guards concurrent runs), as root or
through passwordless sudo; a RuntimeError (of the caller's type) says why when that is not possible, so
a test that needs the component fails rather than skips."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from devchain.process import file_lock

APT_TIMEOUT_S = 300


def ensure_installed(
    packages: list[str],
    find: Callable[[], Path | None],
    *,
    error: type[RuntimeError] = RuntimeError,
) -> Path:
    """What `find` finds, after installing `packages` with apt-get if it finds nothing."""
    found = find()
    if found is not None:
        return found
    with file_lock("apt-" + "-".join(packages)):
        found = find()
        if found is not None:
            return found
        apt = shutil.which("apt-get")
        wanted = " ".join(packages)
        if apt is None:
            raise error(f"{wanted} is not installed and apt-get is not available: install {wanted}")
        prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if prefix is None:
            raise error(f"{wanted} is not installed; run `apt-get install -y {wanted}` as root")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = [*prefix, apt, "install", "-y", *packages]
        output = ""
        for command in (install, [*prefix, apt, "update"], install):  # retry with fresh package lists
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env
                )
            except subprocess.TimeoutExpired as exc:
                raise error(f"`{' '.join(command)}` timed out after {exc.timeout} s") from exc
            output += f"$ {' '.join(command)} (exit {result.returncode})\n{result.stderr[-1500:]}\n"
            found = find()
            if found is not None:
                return found
    raise error(f"could not install {wanted} with apt-get:\n{output}")


def executable(*candidates: str) -> Callable[[], Path | None]:
    """A finder for the first executable among `candidates` (paths or names on PATH)."""

    def find() -> Path | None:
        for candidate in candidates:
            path = (
                Path(candidate) if "/" in candidate else (Path(p) if (p := shutil.which(candidate)) else None)
            )
            if path is not None and path.is_file() and os.access(path, os.X_OK):
                return path
        return None

    return find

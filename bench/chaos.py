#!/usr/bin/env python
"""Chaos run: payments of every kind on two real chains while the gateway's processes are killed at random.

    .venv/bin/python bench/chaos.py [--payments 200] [--seed 1] [--kill-every 4] [--json PATH] [--only KIND]

What it does (the parts are in tests/chaos/; docs/RELIABILITY.md has written-up runs):

1. The production stack of docs/OPERATIONS.md (tests/stack.py): a PostgreSQL and a Redis broker of its own,
   `manage.py migrate`, a merchant, an EVM and a litecoin-regtest wallet and an API key made with the
   README's commands; gunicorn, one Celery worker per queue and beat with DJANGO_DEBUG off. The chains:
   anvil as `evm-local` (a block a second, a 6-decimal test USDC), a second anvil as `base` (chain id 8453:
   the same addresses on another network), litecoind regtest as `litecoin-regtest` (Core RPC, a block every
   two seconds). A Standard Webhooks receiver that answers 500 to one request in ten, hangs past the
   gateway's timeout on one in twenty-five and never answers one in fifty, recording every request.
2. Payments over the API (an idempotency key each, retried as a merchant's client would while the web
   processes are down), 60 % EVM, 40 % Litecoin. EVM: ETH or USDC paid exactly, under (some topped up),
   over, twice, in the other asset, on the other network, after expiry (late), or reorged out of the chain
   (anvil_reorg drops the transaction), some paid again. Litecoin: exactly, under, topped up, over, twice,
   late, replaced by RBF (a fee bump: paid once; or a replacement paying the customer back: never paid),
   or in a block that is invalidated (mined again in another block, or double-spent in the new chain).
3. Meanwhile, every `--kill-every` seconds on average, one of the web, scan, webhooks, default workers or beat
   is SIGKILLed with its children and restarted a moment later; PostgreSQL is stopped and started once,
   30 s in. A probe asks the API and the checkout every half second.
4. Then the faults stop, the receiver heals, blocks are mined until every payment is settled and every
   webhook delivered, and the run checks:
   - `manage.py verify_payments`: no payment, refund or settlement differs from its evidence;
   - every transfer the nodes hold for a payment address (ETH transactions and USDC Transfer logs read
     from both anvils block by block; Litecoin outputs from litecoind's best chain and mempool) is recorded
     exactly once as a canonical observation of its network, and no canonical observation is off its chain;
   - every state transition has exactly one event, and every event (`position` given) reached the receiver
     with a valid Standard Webhooks signature; duplicates (a webhook-id answered 200 more than once) are
     counted, and must not exceed the webhook attempts in flight at the kills of the webhook worker and
     at the database's stop;
   - `manage.py verify_audit` passes;
   - every probe failure overlaps a window when no web process ran or the database was down.
5. Prints the figures (and writes them as JSON with --json); exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from tests.chaos import evm, litecoin  # noqa: E402
from tests.chaos.run import Config, chaos_run  # noqa: E402

KINDS = sorted([f"evm:{k}" for k in evm.KINDS] + [f"ltc:{k}" for k in litecoin.KINDS])


def _interrupted(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the run through its `finally`: nothing is left running


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between kills")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=KINDS, help="every payment of this kind (to look at one)")
    args = parser.parse_args()
    report = chaos_run(
        Config(payments=args.payments, seed=args.seed, kill_every=args.kill_every, only=args.only)
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

"""Finance (reconciliation): valuations, exports, the nightly re-verification and the daily close (their
beat entries: queues.py)."""

import os

from gateway.env import env_number

# Finance (reconciliation/valuations.py): newly paid payments are valued at the rate source's rate every
# GATEWAY_VALUATION_POLL_S seconds (so the "rate when paid" is at most that much, plus any outage, late).
GATEWAY_VALUATION_POLL_S = env_number("GATEWAY_VALUATION_POLL_S", 30.0, positive=True)
# A payment the rate source could not value within this many seconds of being paid stays unvalued (a later
# rate would not be the rate when paid).
GATEWAY_VALUATION_MAX_DELAY_S = env_number("GATEWAY_VALUATION_MAX_DELAY_S", 3600.0, positive=True)
# A reconciliation CSV of at least GATEWAY_EXPORT_PARALLEL_MIN_ROWS payments is written by this many
# PostgreSQL backends at once, each a slice of the rows in one shared snapshot (reconciliation/csvcopy.py):
# about the number of cores the database may spend on one download.
GATEWAY_EXPORT_PARALLEL = env_number("GATEWAY_EXPORT_PARALLEL", 2, minimum=1)
GATEWAY_EXPORT_PARALLEL_MIN_ROWS = env_number("GATEWAY_EXPORT_PARALLEL_MIN_ROWS", 50000)
# The nightly re-verification (reconciliation/verification.py): every day at GATEWAY_REVERIFY_AT (UTC,
# "HH:MM"), the payments of the last GATEWAY_REVERIFY_DAYS days against the chain.
GATEWAY_REVERIFY_DAYS = env_number("GATEWAY_REVERIFY_DAYS", 30, minimum=1)
GATEWAY_REVERIFY_AT = os.environ.get("GATEWAY_REVERIFY_AT", "03:15")
# The daily close (reconciliation/close.py) of yesterday, every day at GATEWAY_CLOSE_AT (UTC, "HH:MM").
GATEWAY_CLOSE_AT = os.environ.get("GATEWAY_CLOSE_AT", "00:30")

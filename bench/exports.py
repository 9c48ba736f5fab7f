#!/usr/bin/env python
"""Benchmark: the reconciliation CSV export of one merchant's payments, beside `COPY ... TO STDOUT` of the
same rows in the same run.

    .venv/bin/python bench/exports.py [--payments 1000000] [--repeat 3] [--skip-http] [--keep-db]

1. PostgreSQL as in create_intents.py (its `Bench`): DATABASE_URL if set, else the embedded server; a
   dedicated database (`bench_exports`) dropped, recreated and migrated, with a merchant, an EVM wallet and an
   API key (scope reports:read). Then --payments payments are inserted with set-based SQL (INSERT ... SELECT
   over generate_series) into the real tables: every payment on a network asset (ETH or USDC on ethereum)
   with its own derived address, most priced in USD with a quote; ~70 % paid with one canonical
   observation in a block (~5 % of all with two), a transition to `paid` and a paid valuation; ~30 % of the
   paid ones swept (outflow transaction, outflows, a sweep settlement with 50 legs); ~3 % with a refund; a
   chain tip, a treasury address and a service fee schedule. ANALYZE.
2. Measured in the same run, interleaved, --repeat times (median and each run), each in a process of its own
   so that its peak RSS (VmHWM) is its own:
   - export: Django set up against the bench database, then `reconciliation_csv(RowFilter(merchant_ids=(m,)))`
     (what the API's and the admin's download return: PostgreSQL writes the CSV, in GATEWAY_EXPORT_PARALLEL
     slices of one snapshot) written to /dev/null, in autocommit as the view runs it;
   - export_one: the same in one COPY (parts=1);
   - http: gunicorn (1 sync worker) serving GET /api/v1/reports/reconciliation.csv, read by a streaming
     client; the worker's VmHWM; once more with a gthread worker;
   - copy: `COPY (<the rows' SELECT, same filter>) TO STDOUT WITH CSV` through psycopg (the baseline: the
     statement's raw columns, nothing formatted).
   With --python, once: the Python writer (`csv_lines` over `reconciliation_rows`, the JSON rows' path).
   First byte: the first bytes the consumer gets (the CSV header leaves before any row is read, in the
   process and over HTTP); first row: the first data row, which is what waits for the database.
3. Prints a table (seconds, MB/s, rows/s, first byte, first row, peak RSS, ratio to COPY) and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from create_intents import Bench, CpuMeter, git_state, log  # noqa: E402

CSV_PATH = "/api/v1/reports/reconciliation.csv"
TARGET_SECONDS = 30.0
TARGET_RSS_MB = 150.0
TARGET_FIRST_BYTE_S = 1.0
LEGS_PER_SETTLEMENT = 50


# --- the data ---------------------------------------------------------------------------------------------

# Per payment i (1..N) everything is derived from i, so a run is reproducible. g holds the attributes; the
# real tables are filled from it, one INSERT ... SELECT each.
_GEN = """
CREATE TEMP TABLE g AS
SELECT i,
       'pi_bench' || lpad(i::text, 16, '0') AS id,
       (now() - interval '365 days') + (i * (interval '365 days' / %(n)s)) AS created_at,
       CASE WHEN i %% 10 < 7 THEN %(eth)s ELSE %(usdc)s END AS na_id,
       (i %% 10 < 7) AS is_eth,
       (i %% 100 < 70) AS paid,
       (i %% 100 < 5) AS two_obs,
       (i %% 100 < 70 AND (i / 7) %% 10 < 3) AS swept,
       (i %% 100 < 70 AND (i / 13) %% 100 < 4) AS refunded,
       (i %% 20 <> 0) AS fiat,
       (10 + (i %% 490))::numeric AS usd
FROM generate_series(1, %(n)s) AS i;
ALTER TABLE g ADD COLUMN due numeric, ADD COLUMN rate numeric;
UPDATE g SET rate = CASE WHEN is_eth THEN 3000 + (i %% 500) ELSE 1 END;
UPDATE g SET due = CASE WHEN is_eth THEN round(usd * 1e18 / rate) ELSE usd * 1e6 END;
CREATE UNIQUE INDEX ON g (i);
ANALYZE g;
"""

_INSERTS = [
    (
        "addresses",
        """
INSERT INTO payments_paymentaddress (id, wallet_id, derivation_index, address, created_at, claimed_at)
SELECT %(addr_base)s + i, %(wallet)s, 100000 + i,
       '0x' || substr(md5('a' || i) || md5('b' || i), 1, 40), created_at, created_at
FROM g
""",
    ),
    (
        "quotes",
        """
INSERT INTO payments_quote (id, price_amount, price_currency, network_asset_id, rate, source, rate_time,
                            quoted_at, expires_at, amount_base_units, rounded_to_decimals)
SELECT %(quote_base)s + i, usd, 'USD', na_id, rate, 'coingecko', created_at - interval '20 seconds',
       created_at, created_at + interval '15 minutes', due, NULL
FROM g WHERE fiat
""",
    ),
    (
        "intents",
        """
INSERT INTO payments_paymentintent (
    id, merchant_id, state, merchant_order_id, customer_id, price_amount, price_currency, network_asset_id,
    wallet_id, address_id, amount_due_base_units, quote_id, required_confirmations,
    underpayment_tolerance_bps, overpayment_tolerance_bps, late_payment_window_minutes, expires_at,
    canceled_at, fulfilled_at, fulfilment_reference, success_url, cancel_url, metadata, checkout_token,
    created_at, updated_at, amount_seen_base_units, amount_confirmed_base_units, amount_refunded_base_units,
    flags, event_sequence)
SELECT id, %(merchant)s,
       CASE WHEN paid THEN 'paid' WHEN i %% 100 >= 97 THEN 'awaiting_payment' ELSE 'expired' END,
       'order-' || i, 'cust-' || (i %% 50000),
       CASE WHEN fiat THEN usd ELSE due / CASE WHEN is_eth THEN 1e18 ELSE 1e6 END END,
       CASE WHEN fiat THEN 'USD' WHEN is_eth THEN 'ETH' ELSE 'USDC' END,
       na_id, %(wallet)s, %(addr_base)s + i, due, CASE WHEN fiat THEN %(quote_base)s + i END, 12,
       0, 0, 1440, created_at + interval '1 hour', NULL,
       CASE WHEN paid AND i %% 2 = 0 THEN created_at + interval '1 day' END, '', '', '', '{}'::jsonb,
       md5('t' || i) || md5('u' || i), created_at, created_at + interval '10 minutes',
       CASE WHEN paid THEN due ELSE 0 END, CASE WHEN paid THEN due ELSE 0 END,
       CASE WHEN refunded AND i %% 3 <> 0 THEN round(due / 2) ELSE 0 END,
       CASE WHEN i %% 1000 = 1 THEN '["late_payment"]'::jsonb ELSE '[]'::jsonb END,
       CASE WHEN paid THEN 4 ELSE 2 END
FROM g
""",
    ),
    (
        "observations",
        """
INSERT INTO payments_chainobservation (
    id, network_id, tx_hash, output_index, address, network_asset_id, token_contract, amount_base_units,
    block_height, block_hash, block_time, position_in_block, seen_unconfirmed_at, canonical, sender,
    intent_id, recorded_at, updated_at)
SELECT %(obs_base)s + i * 2 + k, %(network)s, '0x' || md5('tx' || i || ':' || k) || md5('ty' || i || ':' || k),
       CASE WHEN is_eth THEN -1 ELSE 0 END,
       '0x' || substr(md5('a' || i) || md5('b' || i), 1, 40), na_id, CASE WHEN is_eth THEN '' ELSE %(usdc_contract)s::text END,
       CASE WHEN two_obs THEN CASE WHEN k = 0 THEN due - round(due / 3) ELSE round(due / 3) END ELSE due END,
       %(height0)s + i / 20 + k, '0x' || md5('blk' || (i / 20 + k)) || md5('blk2' || (i / 20 + k)),
       created_at + interval '2 minutes' + k * interval '3 minutes', i %% 150,
       created_at + interval '1 minute' + k * interval '3 minutes', TRUE,
       '0x' || substr(md5('s' || i), 1, 40), id, created_at + interval '1 minute', created_at + interval '3 minutes'
FROM g CROSS JOIN generate_series(0, 1) AS k
WHERE paid AND (k = 0 OR two_obs)
""",
    ),
    (
        "transitions",
        """
INSERT INTO payments_statetransition (intent_id, from_state, to_state, cause, reason, verdict, created_at)
SELECT id, 'created', 'awaiting_payment', 'create', 'address assigned', '{}'::jsonb, created_at FROM g
UNION ALL
SELECT id, 'awaiting_payment', CASE WHEN paid THEN 'paid' ELSE 'expired' END,
       CASE WHEN paid THEN 'obs:' || i ELSE 'expiry' END,
       CASE WHEN paid THEN 'confirmed amount reached the amount due' ELSE 'expired unpaid' END,
       '{"verdict": "bench"}'::jsonb,
       CASE WHEN paid THEN created_at + interval '6 minutes' ELSE created_at + interval '1 hour' END
FROM g WHERE paid OR i %% 100 < 97
""",
    ),
    (
        "paid valuations",
        """
INSERT INTO reconciliation_paidvaluation (intent_id, event_id, paid_at, currency, rate, rate_source,
                                          rate_time, attempts, last_error, updated_at)
SELECT id, 'evt_bench' || lpad(i::text, 16, '0'), created_at + interval '6 minutes', 'USD',
       rate * 1.001, 'coingecko', created_at + interval '6 minutes', 1, '', created_at + interval '7 minutes'
FROM g WHERE paid
""",
    ),
    (
        "swept (numbered)",
        """
CREATE TEMP TABLE sw AS
SELECT g.*, (row_number() OVER (ORDER BY i) - 1) AS r FROM g WHERE swept;
ALTER TABLE sw ADD COLUMN grp bigint, ADD COLUMN pos int;
UPDATE sw SET grp = r / %(legs)s, pos = r %% %(legs)s;
ANALYZE sw
""",
    ),
    (
        "outflow transactions",
        """
INSERT INTO payments_outflowtransaction (
    id, network_id, tx_hash, block_height, block_hash, block_time, position_in_block, seen_unconfirmed_at,
    canonical, fee_base_units, fee_payer, destinations, recorded_at, updated_at)
SELECT %(otx_base)s + grp, %(network)s, '0x' || md5('sweep' || grp) || md5('sweep2' || grp),
       %(height0)s + max(i) / 20 + 30, '0x' || md5('sblk' || grp) || md5('sblk2' || grp),
       max(created_at) + interval '1 day', 1, max(created_at) + interval '1 day', TRUE,
       21000 * 20000000000::numeric * count(*), '',
       jsonb_build_array(jsonb_build_object('index', 0, 'address', %(treasury)s::text, 'amount', sum(due)::text,
                                            'token_contract', '', 'script', '')),
       max(created_at) + interval '1 day', max(created_at) + interval '1 day'
FROM sw GROUP BY grp
""",
    ),
    (
        "outflows",
        """
INSERT INTO payments_outflow (transaction_id, network_id, tx_hash, index, address, intent_id, network_asset_id,
                              token_contract, amount_base_units, spent_observation_id, recorded_at)
SELECT %(otx_base)s + grp, %(network)s, '0x' || md5('sweep' || grp) || md5('sweep2' || grp), pos,
       '0x' || substr(md5('a' || i) || md5('b' || i), 1, 40), id, na_id,
       CASE WHEN is_eth THEN '' ELSE %(usdc_contract)s::text END, due, NULL, created_at + interval '1 day'
FROM sw
""",
    ),
    (
        "settlements",
        """
INSERT INTO payments_settlement (id, transaction_id, merchant_id, network_id, kind, canonical, revision,
                                 fee_base_units, fee_asset_id, destinations, seen_at, created_at, updated_at)
SELECT 'stl_bench' || lpad(grp::text, 12, '0'), %(otx_base)s + grp, %(merchant)s, %(network)s, 'sweep', TRUE, 0,
       21000 * 20000000000::numeric * count(*), %(eth)s, '[]'::jsonb,
       max(created_at) + interval '1 day', max(created_at) + interval '1 day', max(created_at) + interval '1 day'
FROM sw GROUP BY grp
""",
    ),
    (
        "settlement legs",
        """
INSERT INTO payments_settlementleg (settlement_id, position, intent_id, network_asset_id, token_contract,
                                    amount_base_units, fee_base_units, fiat_currency, fiat_value, rate,
                                    rate_source, rate_time)
SELECT 'stl_bench' || lpad(grp::text, 12, '0'), pos, id, na_id, CASE WHEN is_eth THEN '' ELSE %(usdc_contract)s::text END,
       due, 21000 * 20000000000::numeric, 'USD', usd, rate, 'coingecko', created_at + interval '1 day'
FROM sw
""",
    ),
    (
        "refunds",
        """
INSERT INTO payments_refund (
    id, merchant_id, intent_id, network_asset_id, state, reason, amount_kind, amount_base_units, fiat_amount,
    fiat_currency, rate, rate_source, rate_time, requested_by, approved_by, approved_at, destination,
    destination_set_by, destination_set_at, canceled_by, canceled_at, expires_at, failure_reason,
    observation_id, event_revision, created_at, updated_at)
SELECT 're_bench' || lpad(i::text, 16, '0'), %(merchant)s, id, na_id,
       CASE WHEN i %% 3 = 0 THEN 'requested' ELSE 'confirmed' END, 'customer returned the order', 'custom',
       round(due / 2), NULL, '', NULL, '', NULL, 'bench', 'bench', created_at + interval '2 days',
       '0x' || substr(md5('d' || i), 1, 40), 'bench', created_at + interval '2 days', '', NULL,
       created_at + interval '9 days', '', NULL, 2, created_at + interval '2 days', created_at + interval '3 days'
FROM g WHERE refunded
""",
    ),
    (
        "chain tip, treasury, fee schedule",
        """
INSERT INTO payments_chaintip (network_id, height, block_hash, updated_at)
VALUES (%(network)s, %(height0)s + %(n)s / 20 + 200, '0x' || md5('tip'), now())
ON CONFLICT (network_id) DO UPDATE SET height = EXCLUDED.height;
INSERT INTO payments_treasuryaddress (merchant_id, network_id, address, label, created_at, retired_at)
VALUES (%(merchant)s, %(network)s, %(treasury)s, 'cold wallet', now() - interval '400 days', NULL);
INSERT INTO reconciliation_servicefeeschedule (merchant_id, valid_from, currency, percent_bps, fixed_amount,
                                               note, created_at)
VALUES (%(merchant)s, now() - interval '400 days', 'USD', 100, 0.30, 'bench', now())
""",
    ),
]

_SEQUENCES = (
    "payments_paymentaddress",
    "payments_quote",
    "payments_chainobservation",
    "payments_outflowtransaction",
)


def load_data(url: str, merchant: str, wallet: int, n: int) -> dict:
    """Fills the real tables for `merchant` with n payments, set-based; returns row counts and timings."""
    import psycopg

    t_all = time.perf_counter()
    timings = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        ref = dict(
            conn.execute(
                "SELECT a.code, na.id FROM payments_networkasset na JOIN payments_asset a ON a.id = na.asset_id "
                "JOIN payments_network n ON n.id = na.network_id WHERE n.code = 'ethereum'"
            ).fetchall()
        )
        network, usdc_contract = conn.execute(
            "SELECT na.network_id, lower(na.contract_address) FROM payments_networkasset na WHERE na.id = %s",
            [ref["USDC"]],
        ).fetchone()

        def base(table: str) -> int:
            return conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]

        params = dict(
            n=n,
            eth=ref["ETH"],
            usdc=ref["USDC"],
            usdc_contract=usdc_contract,
            network=network,
            merchant=merchant,
            wallet=wallet,
            legs=LEGS_PER_SETTLEMENT,
            height0=20_000_000,
            treasury="0x" + "7e" * 20,
            addr_base=base("payments_paymentaddress"),
            quote_base=base("payments_quote"),
            obs_base=base("payments_chainobservation"),
            otx_base=base("payments_outflowtransaction"),
        )
        with conn.transaction():
            for name, sql in [("generate", _GEN), *_INSERTS]:
                t0 = time.perf_counter()
                with conn.cursor() as cur:
                    for statement in sql.split(";\n"):
                        if statement.strip():
                            cur.execute(statement, params)
                timings[name] = time.perf_counter() - t0
                log(f"  {name}: {timings[name]:.1f} s")
            for table in _SEQUENCES:
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                )
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        timings["vacuum analyze"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    return data_summary(url, timings)


def data_summary(url: str, timings: dict) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in (
                "payments_paymentintent",
                "payments_chainobservation",
                "payments_statetransition",
                "payments_settlementleg",
                "payments_settlement",
                "payments_refund",
            )
        }
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"timings": timings, "counts": counts, "db_bytes": size}


# --- the measured processes (this file run with --child KIND) --------------------------------------------


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _select_sql(merchant: str) -> tuple[str, dict]:
    """The statement reconciliation_rows executes for this filter, and its parameters."""
    from reconciliation.selectors import RowFilter, rows_statement

    return rows_statement(RowFilter(merchant_ids=(merchant,)))


def child(kind: str, merchant: str) -> dict:
    """One measured run in this process; the caller set DATABASE_URL to the bench database."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
    from django.db import connection

    from gateway.csvexport import csv_lines
    from reconciliation.csvcopy import reconciliation_csv
    from reconciliation.exports import csv_rows
    from reconciliation.selectors import COLUMNS, RowFilter, reconciliation_rows

    out = {"kind": kind, "rss_before_mb": _peak_rss_mb()}
    first_byte = first_row = None
    nbytes = rows = 0
    t0 = time.perf_counter()
    if kind in ("export", "export_one", "export_python"):
        profile = None
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        f = RowFilter(merchant_ids=(merchant,))
        if kind == "export_python":  # the Python writer (the JSON rows' path), for comparison
            body = (b.encode() for b in csv_lines(COLUMNS, csv_rows(reconciliation_rows(f))))
        else:  # what the API and admin download run, in autocommit as the view runs it
            body = reconciliation_csv(f, parts=1 if kind == "export_one" else None)
        with open(os.devnull, "wb") as sink:
            for i, data in enumerate(body):
                sink.write(data)
                nbytes += len(data)
                if first_byte is None:
                    first_byte = time.perf_counter() - t0
                elif i == 1:
                    first_row = time.perf_counter() - t0
                rows += data.count(b"\n")
        rows -= 1  # the header
        if profile:
            profile.disable()
            profile.dump_stats(os.environ["BENCH_PROFILE"])
    elif kind == "query":
        sql, params = _select_sql(merchant)
        with connection.chunked_cursor() as cursor:  # as reconciliation_rows reads it (autocommit)
            cursor.itersize = 2000
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(2000):
                if first_row is None:
                    first_row = first_byte = time.perf_counter() - t0
                rows += len(batch)
    elif kind == "copy":
        import psycopg

        sql, params = _select_sql(merchant)
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            bound = psycopg.ClientCursor(conn).mogrify(sql, params)  # COPY takes no bind parameters
            t0 = time.perf_counter()
            with conn.cursor().copy(f"COPY ({bound}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
                for data in copy:
                    if first_byte is None:
                        first_byte = time.perf_counter() - t0
                    nbytes += len(data)
                    rows += bytes(data).count(b"\n")
        rows -= 1
        first_row = first_byte
    out.update(seconds=time.perf_counter() - t0, first_byte=first_byte, first_row=first_row, bytes=nbytes)
    t = os.times()
    out.update(rows=rows, peak_rss_mb=_peak_rss_mb(), cpu_s=t.user + t.system)
    return out


def run_child(kind: str, bench_url: str, merchant: str, profile: str | None = None) -> dict:
    env = dict(os.environ, DATABASE_URL=bench_url, DJANGO_SETTINGS_MODULE="gateway.settings")
    if profile:
        env["BENCH_PROFILE"] = profile
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--merchant", merchant],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"{kind} child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the HTTP path ----------------------------------------------------------------------------------------


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def http_export(bench: Bench, key: str) -> dict:
    """One download through gunicorn (a fresh arbiter with 1 sync worker, so the worker's VmHWM is this
    request's): status, time to the first body byte and the first data row, total, bytes, rows."""
    port = bench.start_gunicorn("gateway.wsgi:application", 1)
    try:
        workers = [p for p in bench.gunicorn_pids() if p != bench.gunicorn.pid]
        rss_idle = max((_vm_hwm_mb(p) or 0) for p in workers)
        request = (
            f"GET {CSV_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        sock = socket.create_connection(("127.0.0.1", port))
        t0 = time.perf_counter()
        sock.sendall(request)
        head = b""
        first_byte = first_row = None
        nbytes = 0
        tail = b""
        while True:
            data = sock.recv(1 << 18)
            if not data:
                break
            if first_byte is None:
                first_byte = time.perf_counter() - t0
            if not head or b"\r\n\r\n" not in head:
                head += data
                if b"\r\n\r\n" not in head:
                    continue
                head, _, data = head.partition(b"\r\n\r\n")
                head += b"\r\n\r\n"
            nbytes += len(data)
            tail = (tail + data)[-5:]
            if first_row is None and nbytes > 4096:  # past the header's chunk: rows are flowing
                first_row = time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        sock.close()
        status = int(head.split(b" ", 2)[1]) if head else 0
        chunked = b"transfer-encoding: chunked" in head.lower()
        complete = tail == b"0\r\n\r\n" if chunked else None  # the last chunk arrived
        rss = max((_vm_hwm_mb(p) or 0) for p in workers)
        cpu_s = sum(CpuMeter._cpu(p) for p in workers)
    finally:
        bench.stop_gunicorn()
    # bytes include the chunked framing (about 10 bytes per 64 KB block); rows are the in-process export's
    return dict(
        kind="http",
        worker_class=bench.args.worker_class,
        cpu_s=cpu_s,
        status=status,
        seconds=seconds,
        first_byte=first_byte,
        first_row=first_row,
        bytes=nbytes,
        rows=None,
        chunked=chunked,
        complete=complete,
        peak_rss_mb=rss,
        rss_before_mb=rss_idle,
    )


def measured(bench: Bench, kind: str, run) -> dict:
    """One run with the machine's CPU around it: the measured process's own share, PostgreSQL's, and what
    the rest of the machine used meanwhile (another user's test suite, say), in cores."""
    meter = bench.meter()
    meter.start()
    t0 = time.perf_counter()
    result = run()
    wall = time.perf_counter() - t0
    shares = meter.stop()
    own = result.get("cpu_s", 0.0) / wall
    result["cpu"] = {
        "measured": round(own, 2),
        "postgres": round(shares["postgres"], 2),
        "other": round(max(0.0, shares["machine"] - own - shares["postgres"] - shares["loadgen"]), 2),
        "machine": round(shares["machine"], 2),
    }
    result["other_processes"] = meter.top_others
    return result


# --- report -----------------------------------------------------------------------------------------------

LABELS = {
    "export": "export (reconciliation_csv, sliced COPY), process",
    "export_one": "export in one COPY (parts=1), process",
    "export_python": "Python writer (csv_lines over rows), once",
    "http": "GET reconciliation.csv, gunicorn 1 sync worker",
    "query": "the SELECT alone (chunked_cursor, no formatting)",
    "copy": "COPY (same SELECT) TO STDOUT WITH CSV (baseline)",
    "http_gthread": "GET reconciliation.csv, 1 gthread worker (once)",
}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def print_report(bench, args, data: dict, runs: dict, cpu: dict, others: list) -> dict:
    import platform

    import django

    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    copy_s = median([r["seconds"] for r in runs.get("copy", [])])
    width = 150
    print()
    print("=" * width)
    print(
        f"exports bench | {os.cpu_count()} cores, {mem_kb / 1024 / 1024:.1f} GiB | Python {platform.python_version()}, "
        f"Django {django.get_version()}, PostgreSQL {bench.info['postgres_version']} ({bench.info['postgres_source']})"
    )
    print(f"code: {git_state()}")
    c = data["counts"]
    print(
        f"data: {c['payments_paymentintent']:,} payments, {c['payments_chainobservation']:,} observations, "
        f"{c['payments_statetransition']:,} transitions, {c['payments_settlement']:,} settlements / "
        f"{c['payments_settlementleg']:,} legs, {c['payments_refund']:,} refunds; database "
        f"{data['db_bytes'] / 1e9:.2f} GB; set-up {data['timings']['total']:.0f} s"
    )
    print("=" * width)
    print(
        f"{'run':<52}{'seconds':>9}{'MB/s':>8}{'rows/s':>10}{'first byte s':>13}{'first row s':>12}"
        f"{'peak RSS MB':>12}{'÷ COPY':>8}   each run (s)"
    )
    print("-" * width)
    summary = {}
    for kind in ("export", "export_one", "http", "http_gthread", "query", "copy", "export_python"):
        rs = runs.get(kind)
        if not rs:
            continue
        sec = median([r["seconds"] for r in rs])
        nbytes = median([r["bytes"] for r in rs])
        rows = median([r["rows"] for r in rs]) or median([r["rows"] for r in runs.get("export", [])])
        if any(r.get("complete") is False for r in rs):
            rows = None  # cut short: no rate
        row = dict(
            seconds=sec,
            mb_s=(nbytes / 1e6 / sec) if nbytes else None,
            rows_s=(rows / sec) if rows else None,
            first_byte=median([r["first_byte"] for r in rs]),
            first_row=median([r["first_row"] for r in rs]),
            peak_rss_mb=median([r["peak_rss_mb"] for r in rs]),
            ratio=(sec / copy_s) if copy_s else None,
            each=[round(r["seconds"], 2) for r in rs],
            cpu=[r.get("cpu") for r in rs],
            runs=rs,
        )
        summary[kind] = row
        print(
            f"{LABELS[kind]:<52}{fmt(sec):>9}{fmt(row['mb_s'], '.1f'):>8}{fmt(row['rows_s'], ',.0f'):>10}"
            f"{fmt(row['first_byte'], '.3f'):>13}{fmt(row['first_row'], '.3f'):>12}{fmt(row['peak_rss_mb'], '.1f'):>12}"
            f"{fmt(row['ratio']):>8}   {row['each']}"
        )
    print("-" * width)
    print(
        "median of the runs; first byte = first bytes the consumer gets (the CSV header leaves before any row is"
        " read); first row = first data row."
    )
    print("peak RSS: VmHWM of the measuring process (the gunicorn worker for HTTP; idle worker shown below).")
    for kind, rs in runs.items():
        print(f"CPU in cores (measured process / PostgreSQL / other / machine) {kind}: "
              + "; ".join(" / ".join(str(r['cpu'][k]) for k in ('measured', 'postgres', 'other', 'machine'))
                          + (f" {r['other_processes']}" if r['other_processes'] else "") for r in rs))  # fmt: skip
    if "http" in runs:
        r = runs["http"][0]
        print(
            f"http: status {[x['status'] for x in runs['http']]}, chunked {r['chunked']}, complete (last chunk "
            f"received) {[x['complete'] for x in runs['http']]}, idle worker VmHWM "
            f"{r['rss_before_mb']:.1f} MB"
        )
    if "export" in runs:
        r = runs["export"][0]
        print(
            f"export: {r['rows']:,} rows, {r['bytes'] / 1e6:.1f} MB; VmHWM after django.setup() {r['rss_before_mb']:.1f} MB"
        )
    if "copy" in runs:
        r = runs["copy"][0]
        print(f"copy: {r['rows']:,} rows, {r['bytes'] / 1e6:.1f} MB")
    print(f"CPU during the measured runs (cores): {cpu}; other processes busy meanwhile: {others}")
    print()
    exp = summary.get("export")
    http, http_label = summary.get("http"), "over HTTP"
    if http and any(r.get("complete") is False for r in runs["http"]):
        # the sync worker was killed at gunicorn's --timeout: compare with the complete gthread download
        http, http_label = summary.get("http_gthread"), "over HTTP (gthread; sync cut at --timeout)"
    if exp:
        checks = [
            ("total", f"<= {TARGET_SECONDS:g} s", exp["seconds"], exp["seconds"] <= TARGET_SECONDS),
            ("peak RSS", f"<= {TARGET_RSS_MB:g} MB", exp["peak_rss_mb"], exp["peak_rss_mb"] <= TARGET_RSS_MB),
            (
                "first byte",
                f"<= {TARGET_FIRST_BYTE_S:g} s",
                exp["first_byte"],
                exp["first_byte"] <= TARGET_FIRST_BYTE_S,
            ),
            (
                "first row",
                f"<= {TARGET_FIRST_BYTE_S:g} s",
                exp["first_row"],
                exp["first_row"] <= TARGET_FIRST_BYTE_S,
            ),
        ]
        for name, target, value, ok in checks:
            line = f"target: export {name} {target} -> {value:.2f}: {'MET' if ok else 'MISSED'}"
            if http:
                hv = {"total": http["seconds"], "peak RSS": http["peak_rss_mb"], "first byte": http["first_byte"],
                      "first row": http["first_row"]}[name]  # fmt: skip
                line += f" | {http_label} {fmt(hv)}"
            print(line)
        if exp["ratio"]:
            print(f"ratio export / COPY = {exp['ratio']:.2f}")
    print("=" * width)
    return summary


# --- main -------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1_000_000, help="payments to insert (1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds, interleaved (3)")
    parser.add_argument("--skip-http", action="store_true", help="no gunicorn download")
    parser.add_argument("--python", action="store_true", help="also time the Python writer once (~80 s)")
    parser.add_argument("--profile", metavar="PATH", help="cProfile one extra export run into PATH")
    parser.add_argument("--db-name", default="bench_exports")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench database at the end")
    parser.add_argument(
        "--reuse-db", action="store_true", help="measure a database kept by --keep-db, no set-up"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--merchant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.merchant), default=str))
        return 0
    args.worker_class, args.threads = "sync", 1  # what Bench.start_gunicorn reads

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    started = time.perf_counter()
    try:
        bench.start_database()
        bench.setup_django()
        from django.core.management import call_command
        from django.db import connections

        from payments.models import Merchant, Wallet

        merchant = Merchant.objects.get()
        wallet = Wallet.objects.get(merchant=merchant)
        import io

        out = io.StringIO()
        call_command("create_api_key", merchant.pk, "--scopes", "reports:read", stdout=out)
        key = out.getvalue().strip()
        connections.close_all()
        if bench.reused:
            data = data_summary(bench.bench_url, {"total": 0.0})
        else:
            log(f"inserting {args.payments:,} payments (set-based SQL)")
            data = load_data(bench.bench_url, merchant.pk, wallet.pk, args.payments)
        log(f"set-up done in {data['timings']['total']:.1f} s: {data['counts']}")

        runs: dict[str, list] = {}
        meter = bench.meter()
        meter.start()
        for rnd in range(args.repeat):
            for kind in ("copy", "export", "export_one", "http"):
                if kind == "http":
                    if args.skip_http:
                        continue
                    result = measured(bench, kind, lambda: http_export(bench, key))
                else:
                    result = measured(bench, kind, lambda k=kind: run_child(k, bench.bench_url, merchant.pk))
                runs.setdefault(kind, []).append(result)
                log(
                    f"round {rnd + 1} {kind}: {result['seconds']:.2f} s, first byte {fmt(result['first_byte'], '.3f')} s, "
                    f"first row {fmt(result['first_row'], '.3f')} s, {result['bytes'] / 1e6:.1f} MB, "
                    f"peak RSS {fmt(result['peak_rss_mb'], '.1f')} MB, CPU {result['cpu']} {result['other_processes']}"
                )
        if not args.skip_http and args.worker_class != "gthread":
            # a gthread worker's heartbeat runs beside the request: the download is not cut at --timeout
            args.worker_class = "gthread"
            result = measured(bench, "http_gthread", lambda: http_export(bench, key))
            args.worker_class = "sync"
            runs["http_gthread"] = [result]
            log(
                f"http, gthread worker: {result['seconds']:.2f} s, complete {result['complete']}, CPU {result['cpu']}"
            )
        if args.python:
            result = measured(
                bench, "export_python", lambda: run_child("export_python", bench.bench_url, merchant.pk)
            )
            runs["export_python"] = [result]
            log(f"Python writer: {result['seconds']:.2f} s, first row {fmt(result['first_row'], '.3f')} s")
        cpu = {k: round(v, 2) for k, v in meter.stop().items() if k in ("postgres", "machine", "other")}
        others = meter.top_others
        if args.profile:
            run_child("export", bench.bench_url, merchant.pk, profile=args.profile)
            log(f"cProfile of one export written to {args.profile}")
        summary = print_report(bench, args, data, runs, cpu, others)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {"args": vars(args), "info": bench.info, "data": data, "summary": summary, "cpu": cpu,
                     "other_processes": others},
                    indent=2,
                    default=str,
                )
            )  # fmt: skip
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.cleanup()
        log(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())

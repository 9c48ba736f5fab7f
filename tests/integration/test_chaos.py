"""The chaos run of docs/RELIABILITY.md in the suite, 100 payments: the production processes killed at
random while payments of every kind happen on anvil and litecoind, PostgreSQL restarted once, a receiver
that fails and hangs. bench/chaos.py runs the same with more payments."""

from __future__ import annotations

import json

from tests.chaos.run import Config, chaos_run
from tests.stack import REPO


def test_a_hundred_payments_under_faults_end_as_their_evidence_says():
    report = chaos_run(Config(payments=100, seed=11, kill_every=4.0))
    artifacts = REPO / ".state" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "chaos-100.json").write_text(json.dumps(report, indent=2))  # the figures, pass or fail
    assert report["ok"], json.dumps(report, indent=2)
    assert report["database_restart_s"] is not None and sum(report["kills"].values()) >= 10, report["kills"]
    kinds = report["states_by_kind"]
    assert {"evm:exact", "evm:wrong_network", "ltc:exact", "ltc:rbf_bumped", "ltc:reorged"} <= set(kinds), (
        kinds
    )
    # the kinds whose ending does not depend on timing end as a customer would expect
    assert kinds["evm:exact"] == {"paid": sum(kinds["evm:exact"].values())}, kinds["evm:exact"]
    assert kinds["ltc:rbf_bumped"] == {"paid": sum(kinds["ltc:rbf_bumped"].values())}, kinds["ltc:rbf_bumped"]
    assert set(kinds["evm:wrong_network"]) == {"awaiting_payment+wrong_network"}, kinds["evm:wrong_network"]

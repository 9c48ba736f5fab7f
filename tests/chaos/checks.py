"""The checks at the end of the chaos run: the gateway's own verifiers, the chains against the recorded
observations, events against transitions, the receiver's deliveries, and availability."""

from __future__ import annotations

from collections import Counter

import psycopg

from tests.stack import Database, Processes

from .evm import Payment
from .faults import Chaos, Probe
from .receiver import FlakyReceiver


def last_line(result) -> str:
    out = result.stdout.strip()
    return out.splitlines()[-1] if out else result.stderr.strip()[-500:]


def check(
    processes: Processes,
    database: Database,
    chains: dict,
    receiver: FlakyReceiver,
    probe: Probe,
    chaos: Chaos,
    payments: list[Payment],
) -> dict:
    result: dict = {}
    verify = processes.manage_run("verify_payments")
    result["verify_payments"] = last_line(verify)
    result["verify_payments_ok"] = verify.returncode == 0
    mismatches = [line for line in verify.stdout.splitlines() if line.startswith("MISMATCH")]
    result["verify_payments_mismatches"] = mismatches[:20]
    audit = processes.manage_run("verify_audit")
    result["verify_audit"] = last_line(audit)
    result["verify_audit_ok"] = audit.returncode == 0
    with psycopg.connect(database.url) as conn:
        addresses = {
            a
            for (a,) in conn.execute(
                "SELECT a.address FROM payments_paymentaddress a JOIN payments_paymentintent i ON i.address_id = a.id"
            )
        }
        observed_rows = conn.execute(
            "SELECT n.code, o.tx_hash, o.output_index FROM payments_chainobservation o "
            "JOIN payments_network n ON n.id = o.network_id WHERE o.canonical"
        ).fetchall()
        transitions_without_event = conn.execute(
            "SELECT count(*) FROM payments_statetransition t "
            "WHERE NOT EXISTS (SELECT 1 FROM payments_event e WHERE e.transition_id = t.id)"
        ).fetchone()[0]
        transitions_with_several_events = conn.execute(
            "SELECT count(*) FROM (SELECT transition_id FROM payments_event WHERE transition_id IS NOT NULL "
            "GROUP BY transition_id HAVING count(*) > 1) t"
        ).fetchone()[0]
        events = {e for (e,) in conn.execute("SELECT id FROM payments_event WHERE position IS NOT NULL")}
        final = {
            i: (state, flags)
            for i, state, flags in conn.execute("SELECT id, state, flags FROM payments_paymentintent")
        }
        kinds = {p.intent["id"]: p.label for p in payments}
        result["mismatched_intents"] = [
            intent_history(conn, line.split()[1].rstrip(":"), kinds) for line in mismatches[:5]
        ]
    result |= chain_check(chains, addresses, observed_rows)
    result["transitions_without_event"] = transitions_without_event
    result["transitions_with_several_events"] = transitions_with_several_events
    by_kind: dict[str, Counter] = {}
    for payment in payments:
        state, flags = final.get(payment.intent["id"], ("?", []))
        label = state + ("+" + ",".join(sorted(flags)) if flags else "")
        by_kind.setdefault(payment.label, Counter())[label] += 1
    result["states_by_kind"] = {kind: dict(counts) for kind, counts in sorted(by_kind.items())}
    result |= delivery_check(receiver, events, chaos)
    outside = probe.failures_outside(chaos.downtime())
    result |= {
        "probe_requests": probe.asked,
        "probe_failures": len(probe.failures),
        "probe_failures_outside_downtime": outside[:10],
        "downtime_s": [
            (round(a - probe.started, 1), round(b - probe.started, 1)) for a, b in chaos.downtime()
        ],
    }
    result["ok"] = bool(
        result["verify_payments_ok"]
        and result["verify_audit_ok"]
        and not result["observations_missing"]
        and not result["observations_not_on_chain"]
        and result["observations_recorded_twice"] == 0
        and transitions_without_event == 0
        and transitions_with_several_events == 0
        and result["events_not_delivered"] == 0
        and result["bad_signatures"] == 0
        and result["duplicates_within_in_flight"]
        and not outside
    )
    return result


def intent_history(conn: psycopg.Connection, intent_id: str, kinds: dict[str, str]) -> dict:
    """What a payment verify_payments disagrees with went through: its kind, times, transitions and
    observations (canonical or not), for the post-mortem of a failed run."""
    times = conn.execute(
        "SELECT created_at::text, expires_at::text, state FROM payments_paymentintent WHERE id = %s",
        [intent_id],
    ).fetchone()
    transitions = conn.execute(
        "SELECT created_at::text, from_state, to_state, cause, reason FROM payments_statetransition "
        "WHERE intent_id = %s ORDER BY id",
        [intent_id],
    ).fetchall()
    observations = conn.execute(
        "SELECT tx_hash, output_index, amount_base_units::text, block_height, block_time::text, "
        "seen_unconfirmed_at::text, canonical, recorded_at::text, updated_at::text "
        "FROM payments_chainobservation WHERE intent_id = %s ORDER BY id",
        [intent_id],
    ).fetchall()
    return {
        "intent": intent_id,
        "kind": kinds.get(intent_id, "?"),
        "created_expires_state": times,
        "transitions": transitions,
        "observations": observations,
    }


def chain_check(chains: dict, addresses: set[str], observed_rows: list[tuple[str, str, int]]) -> dict:
    """Every transfer the nodes hold for the gateway's addresses is one canonical observation, and every
    canonical observation is on its chain. EVM addresses and hashes compare in lower case."""
    lowered = {a.lower() for a in addresses}
    on_chain: set[tuple[str, str, int]] = set()
    for chain in chains.values():
        for network, found in chain.transfers(addresses | lowered).items():
            on_chain |= {(network, tx.lower(), index) for tx, index in found}
    observed = {(network, tx.lower(), index) for network, tx, index in observed_rows}
    per_network = Counter(network for network, _, _ in on_chain)
    return {
        "chain_transfers": dict(sorted(per_network.items())),
        "observations_missing": sorted(map(list, on_chain - observed))[:10],
        "observations_not_on_chain": sorted(map(list, observed - on_chain))[:10],
        "observations_recorded_twice": len(observed_rows) - len(observed),
    }


def delivery_check(receiver: FlakyReceiver, events: set[str], chaos: Chaos) -> dict:
    """Every dispatched event answered 200 with a valid signature (checked on arrival); duplicates (a webhook-id answered 200
    more than once) no more than the attempts in flight at the faults that could lose their result."""
    received: Counter[str] = Counter()
    bad_signatures = 0
    for headers, _, status, valid in list(receiver.received):
        if not valid:
            bad_signatures += 1
        elif status == 200:
            received[headers["webhook-id"]] += 1
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    return {
        "events": len(events),
        "events_not_delivered": len(events - set(received)),
        "webhook_requests": len(receiver.received),
        "webhook_requests_by_answer": dict(Counter(str(status) for _, _, status, _ in receiver.received)),
        "bad_signatures": bad_signatures,
        "duplicate_deliveries": duplicates,
        "in_flight_at_faults": chaos.in_flight_at_faults,
        "in_flight_unknown_at_faults": chaos.in_flight_unknown,
        "duplicates_within_in_flight": duplicates <= chaos.in_flight_at_faults or chaos.in_flight_unknown > 0,
    }

"""The nightly re-verification on a real EVM node (anvil, the 6-decimal token): a block reorged away while
no scanner ran, and an amount altered in the database, are both found by `manage.py reverify_payments`
against the chain; each finding is recorded once (an event to the merchant, a support case, the payment
`chain_mismatch` in the reconciliation) and cleared by a later run once the payment is as stored again."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from devchain.anvil import token_transfer, token_units
from payments.chains.evm import EvmBackend
from payments.models import ChainObservation, PaymentIntent
from payments.scanning import network_scan
from payments.webhooks.delivery import events_dispatch
from reconciliation.models import VerificationMismatch, VerificationRun
from support.cases import cases_open
from support.models import SupportCase
from tests.factories import make_merchant
from tests.integration.test_scan_evm_anvil import new_intent
from tests.ledger import reconciled

pytestmark = pytest.mark.django_db


def reverify() -> tuple[int, str]:
    out = StringIO()
    since = (timezone.now() - timedelta(days=1)).isoformat()
    try:
        call_command("reverify_payments", "--since", since, stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code)
    return code, out.getvalue()


def statuses(merchant) -> dict[str, tuple[str, str]]:
    return {
        r["payment_id"]: (r["reconciliation_status"], r["reconciliation_reason"])
        for r in reconciled(merchant).values()
    }


def test_a_reorg_while_no_scanner_ran_and_an_altered_amount_are_found(local_usdc):
    node, token = local_usdc
    backend = EvmBackend("evm-local", node.url)
    merchant = make_merchant()
    kept, dropped = new_intent("10", merchant=merchant), new_intent("20", merchant=merchant)
    token_transfer(node.w3, token, node.accounts[1], kept.address.address, token_units("10"))
    node.mine(1)
    dropped_tx = token_transfer(node.w3, token, node.accounts[1], dropped.address.address, token_units("20"))
    node.mine(2)
    network_scan(backend=backend, now=timezone.now())
    assert {i.state for i in PaymentIntent.objects.filter(pk__in=[kept.pk, dropped.pk])} == {"paid"}
    code, out = reverify()
    assert code == 0 and "2 payments, 2 transactions fetched again, 0 mismatch(es)" in out  # as stored
    assert VerificationMismatch.objects.count() == 0

    # The scanner is down: the last three blocks (the second payment's) are replaced, its transfer gone.
    node.reorg(3)
    # Someone alters the first payment's stored amount.
    ChainObservation.objects.filter(intent=kept).update(amount_base_units=10_000_001)

    code, out = reverify()
    assert code == 1
    found = {(m.intent_id, m.problem) for m in VerificationMismatch.objects.filter(cleared_at__isnull=True)}
    assert found == {(dropped.pk, "not_found"), (dropped.pk, "state"), (kept.pk, "amount")}
    assert f"MISMATCH {kept.pk} amount: " in out and "stored 10000001, the chain says 10000000" in out
    state = VerificationMismatch.objects.get(intent=dropped, problem="state")
    assert (state.stored_state, state.evidence_state) == ("paid", "awaiting_payment")
    assert VerificationMismatch.objects.get(intent=dropped, problem="not_found").tx_hash == dropped_tx

    events = list(
        PaymentIntent.objects.get(pk=dropped.pk).events.filter(type="payment.verification_mismatch")
    )
    assert len(events) == 2 and events[0].payload["verification"]["evidence_state"] == "awaiting_payment"
    events_dispatch(now=timezone.now())
    cases_open(now=timezone.now())
    assert SupportCase.objects.filter(kind="chain_mismatch").count() == 3
    rows = statuses(merchant)
    assert rows[kept.pk][0] == rows[dropped.pk][0] == "chain_mismatch"
    assert "10000001" in rows[kept.pk][1]

    # Found again the next night: recorded once (no new event, no new case).
    code, _ = reverify()
    assert code == 1 and VerificationRun.objects.count() == 3
    assert (
        PaymentIntent.objects.get(pk=dropped.pk).events.filter(type="payment.verification_mismatch").count()
        == 2
    )
    assert VerificationMismatch.objects.filter(cleared_at__isnull=True).count() == 3

    # The amount is put right: the next run clears that finding, the payment reconciles again.
    ChainObservation.objects.filter(intent=kept).update(amount_base_units=10_000_000)
    reverify()
    assert not VerificationMismatch.objects.filter(intent=kept, cleared_at__isnull=True).exists()
    assert statuses(merchant)[kept.pk][0] == "awaiting_settlement"

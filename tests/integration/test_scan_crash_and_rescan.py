"""Operations on a real node: a scanner killed with SIGKILL mid-range resumes without losing or
duplicating anything; `rescan --from-height` finds payments made before the cursor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone

from devchain.anvil import token_transfer, token_units
from payments.models import ChainObservation, Network, PaymentIntent, ScanCursor, StateTransition
from payments.scanning import SCAN_LOCK_NAMESPACE
from tests.factories import make_merchant
from tests.integration.test_scan_evm_anvil import local_usdc, new_intent  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def test_rescan_from_height_finds_earlier_payments(local_usdc):  # noqa: F811
    node, token, _ = local_usdc
    intent = new_intent("10")
    before = node.block_number()
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(3)
    # the scanner starts after the payment (e.g. the node was configured later)
    network = intent.network_asset.network
    network.scan_start_height = node.block_number()
    network.save()
    call_command("scan", "--network", "evm-local", "--once")
    assert PaymentIntent.objects.get(pk=intent.pk).state == "awaiting_payment"
    call_command("rescan", "--network", "evm-local", "--from-height", str(before))
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"
    call_command("rescan", "--network", "evm-local", "--from-height", str(before))
    assert ChainObservation.objects.count() == 1
    assert StateTransition.objects.filter(intent=intent).count() == 2


def test_rescan_waits_for_a_running_scan_before_moving_the_cursor(local_usdc):  # noqa: F811
    """A batch holding the network's scan lock would save its own cursor over the rescan's: the rescan
    waits for it (here: gives up after the lock timeout, the cursor where the batch left it)."""
    node, _, _ = local_usdc
    node.mine(3)
    network = Network.objects.get(code="evm-local")
    tip = node.w3.eth.get_block("latest")
    # where a scan left it (placed here: a scan in this test's transaction would hold the lock itself)
    ScanCursor.objects.create(network=network, height=tip["number"], block_hash=tip["hash"].to_0x_hex())
    height = tip["number"]
    with psycopg.connect(_database_url(), autocommit=True) as scanner:
        scanner.execute("SET lock_timeout = '5s'")
        scanner.execute("SELECT pg_advisory_lock(%s, %s)", [SCAN_LOCK_NAMESPACE, network.pk])
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '300ms'")
        with pytest.raises(OperationalError, match="lock timeout"):
            call_command("rescan", "--network", "evm-local", "--from-height", "1")
    assert ScanCursor.objects.get(network=network).height == height


def _database_url() -> str:
    """The server's URL (what the settings use) pointed at the test database."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.mark.django_db(transaction=True)
def test_scanner_killed_mid_range_loses_and_duplicates_nothing(local_usdc):  # noqa: F811
    node, token, _ = local_usdc
    intents = []
    merchant = make_merchant()
    for _ in range(30):
        intent = new_intent("1", merchant=merchant)
        token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("1"))
        node.mine(1)
        intents.append(intent)
    node.mine(3)
    env = os.environ | {"DATABASE_URL": _database_url()}
    command = [sys.executable, "manage.py", "scan", "--network", "evm-local", "--max-blocks", "1"]
    scanner = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while ChainObservation.objects.count() < 8 and time.monotonic() < deadline and scanner.poll() is None:
        time.sleep(0.02)
    scanner.send_signal(signal.SIGKILL)
    scanner.wait()
    killed_at = ChainObservation.objects.count()
    assert 0 < killed_at < 30, (
        "the scanner should have been killed mid-range",
        scanner.stderr.read()[-2000:],
    )
    cursor = ScanCursor.objects.get(network__code="evm-local")
    assert cursor.height < node.block_number()
    # restart: the rest is found, nothing twice
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert ChainObservation.objects.count() == 30
    assert len(set(ChainObservation.objects.values_list("tx_hash", flat=True))) == 30
    for intent in intents:
        stored = PaymentIntent.objects.get(pk=intent.pk)
        transitions = list(stored.transitions.values_list("to_state", flat=True))
        assert stored.state == "paid", (stored.pk, transitions)
        assert len(transitions) == len(set(transitions))
        assert stored.events.filter(type="payment.paid").count() == 1
    assert ScanCursor.objects.get(network__code="evm-local").height == node.block_number()
    assert timezone.now()

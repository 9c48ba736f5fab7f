"""The daily close on real nodes: the evidence's figures for the day close (opening + received - swept -
refunded - other - fees = closing) and balance against the chain's own account of the payment addresses
(litecoind's UTXO set, anvil's `eth_getBalance` and the token's `balanceOf`), each checked here again
through the node's wallet or the contract. An outflow the gateway never saw (sent while the scanner was
stopped, then the cursor moved past it by hand) makes the close differ: the address, an event to its
payment, a support case."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from web3 import Web3

from devchain.anvil import send_eth, token_transfer, token_units
from payments.models import ChainObservation, ScanCursor
from payments.treasury import treasury_address_add
from payments.webhooks.delivery import events_dispatch
from reconciliation.close import close_day
from reconciliation.models import DailyClose
from support.cases import cases_open
from support.models import SupportCase
from tests.factories import make_merchant
from tests.integration.test_outflows_evm import GAS_FUNDING, new_intent, sweep
from tests.integration.test_outflows_evm import scan as evm_scan
from tests.integration.test_outflows_litecoin import FEE, NETWORK, import_keys, paid_intents, scan, spend
from tests.ledger import reconciled
from tests.nodes.merchant_keys import evm_account

pytestmark = pytest.mark.django_db


def close_today(backend, **kwargs) -> dict[str, DailyClose]:
    now = timezone.now()
    closes = close_day(day=now.date(), now=now, backend_for=lambda network: backend, **kwargs)
    return {
        c.network_asset.asset.code: c for c in closes if c.network_asset.network.code == backend.network_code
    }


def test_litecoin_closes_against_the_nodes_utxo_set_and_an_unseen_outflow_differs(ltc_regtest):
    node, backend = ltc_regtest
    merchant = make_merchant()
    treasury = node.new_address()
    treasury_address_add(
        merchant=merchant, network_code=NETWORK, address=treasury, label="", now=timezone.now()
    )
    kept, swept = paid_intents(node, backend, merchant, ["0.5", "0.25"])
    import_keys(node, [kept, swept])
    credited = ChainObservation.objects.get(intent=swept)
    node.rpc("sendrawtransaction", spend(node, [credited], treasury, 25_000_000 - FEE))
    node.mine(1)
    scan(backend)

    close = close_today(backend, merchant_id=merchant.pk)["LTC"]
    assert (int(close.opening), int(close.received)) == (0, 75_000_000)
    assert (int(close.swept), int(close.fees), int(close.refunded), int(close.other_out)) == (
        25_000_000 - FEE,
        FEE,
        0,
        0,
    )
    assert int(close.closing) == 50_000_000
    # The node's wallet (it holds the keys) agrees, independently of the gateway's scan of the UTXO set.
    unspent = node.rpc("listunspent", 1, 9_999_999, [kept.address.address, swept.address.address])
    assert sum(round(u["amount"] * 10**8) for u in unspent) == 50_000_000
    assert (close.status, int(close.chain_balance), int(close.evidence_balance), int(close.difference)) == (
        "balanced",
        50_000_000,
        50_000_000,
        0,
    )
    assert close.check_height == node.height()

    # The scanner is stopped; the wallet spends the other payment's output elsewhere; the cursor is moved
    # past that block by hand: the gateway never records the outflow.
    other = ChainObservation.objects.get(intent=kept)
    node.rpc("sendrawtransaction", spend(node, [other], node.new_address(), 50_000_000 - FEE))
    [tip] = node.mine(1)
    ScanCursor.objects.filter(network__code=NETWORK).update(height=node.height(), block_hash=tip)
    scan(backend)

    out = StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command(
            "close_day", "--day", timezone.now().date().isoformat(), "--merchant", merchant.pk, stdout=out
        )
    assert exit_.value.code == 1
    close = DailyClose.objects.get(merchant=merchant, network_asset__asset__code="LTC")
    assert (close.status, int(close.chain_balance), int(close.evidence_balance)) == (
        "difference",
        0,
        50_000_000,
    )
    assert close.differences == [{"address": kept.address.address, "evidence": "50000000", "chain": "0"}]
    assert f"{kept.address.address}: evidence 50000000, chain 0" in out.getvalue()
    [event] = kept.events.filter(type="payment.close_difference")
    assert event.payload["close"]["chain_balance"] == "0"
    events_dispatch(now=timezone.now())
    cases_open(now=timezone.now())
    case = SupportCase.objects.get(kind="close_difference")
    assert (case.intent_id, case.merchant_id) == (kept.pk, merchant.pk)
    # Closing again, or the next day with the difference unchanged, tells nothing new.
    close_today(backend, merchant_id=merchant.pk)
    tomorrow = timezone.now().date() + timedelta(days=1)
    close_day(day=tomorrow, now=timezone.now(), backend_for=lambda network: backend, merchant_id=merchant.pk)
    assert DailyClose.objects.get(merchant=merchant, day=tomorrow).status == "difference"
    assert kept.events.filter(type="payment.close_difference").count() == 1


def test_evm_closes_against_eth_get_balance_and_balance_of(evm_chain):
    node, token, backend = evm_chain
    merchant = make_merchant()
    treasury = node.accounts[2]
    treasury_address_add(
        merchant=merchant, network_code="evm-local", address=treasury, label="", now=timezone.now()
    )
    first, second = new_intent(merchant, "10"), new_intent(merchant, "20")
    for intent, amount in ((first, "10"), (second, "20")):
        token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units(amount))
        send_eth(node.w3, treasury, intent.address.address, GAS_FUNDING)
    node.mine(2)
    evm_scan(backend)
    sweep(node, token, first, treasury, token_units("10"))  # the address pays its own gas
    node.mine(1)
    evm_scan(backend)

    # A payment in ETH, swept whole to the treasury: its address pays the gas out of what it holds.
    in_eth = new_intent(merchant, "0.01", asset="ETH")
    send_eth(node.w3, node.accounts[1], in_eth.address.address, Web3.to_wei("0.01", "ether"))
    node.mine(2)
    evm_scan(backend)
    signer = evm_account(in_eth.address.derivation_index)
    price = Web3.to_wei(2, "gwei")
    value = Web3.to_wei("0.01", "ether") - 21_000 * price
    raw = signer.sign_transaction(
        {
            "to": treasury,
            "value": value,
            "gas": 21_000,
            "gasPrice": price,
            "nonce": 0,
            "chainId": node.w3.eth.chain_id,
        }
    )
    node.w3.eth.wait_for_transaction_receipt(node.w3.eth.send_raw_transaction(raw.raw_transaction))
    node.mine(1)
    evm_scan(backend)
    assert node.w3.eth.get_balance(Web3.to_checksum_address(in_eth.address.address)) == 0
    row = reconciled(merchant)[in_eth.pk]
    assert (row["amount_on_address"], row["reconciliation_status"]) == ("0.000000000000000000", "reconciled")

    closes = close_today(backend, merchant_id=merchant.pk)
    usdc, eth = closes["USDC"], closes["ETH"]
    addresses = [first.address.address, second.address.address, in_eth.address.address]
    on_chain_usdc = sum(token.functions.balanceOf(node.w3.to_checksum_address(a)).call() for a in addresses)
    on_chain_eth = sum(node.w3.eth.get_balance(node.w3.to_checksum_address(a)) for a in addresses)
    assert on_chain_usdc == token_units("20") and on_chain_eth < 2 * GAS_FUNDING  # gas was paid
    assert (usdc.status, int(usdc.chain_balance), int(usdc.closing)) == (
        "balanced",
        on_chain_usdc,
        on_chain_usdc,
    )
    assert (int(usdc.received), int(usdc.swept), int(usdc.fees)) == (token_units("30"), token_units("10"), 0)
    assert (eth.status, int(eth.chain_balance), int(eth.closing)) == ("balanced", on_chain_eth, on_chain_eth)
    assert int(eth.received) == 2 * GAS_FUNDING + Web3.to_wei("0.01", "ether")
    assert int(eth.swept) == value and int(eth.fees) == 2 * GAS_FUNDING - on_chain_eth + 21_000 * price

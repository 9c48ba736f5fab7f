"""Outflows on a real EVM node (anvil, the 6-decimal TestUSDC): the merchant's treasury funds the gas of
two paid token payments' addresses (gas funding: not a payment, not a wrong asset), then the merchant's
wallet (keys of the published test mnemonic, signed here with eth-account; the gateway never sees them)
sweeps each address's tokens to the treasury; the scanner records each token transfer out and each
transaction the addresses sent, with the gas it paid."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone
from web3 import Web3

from devchain.anvil import send_eth, token_transfer, token_units
from payments import services
from payments.models import (
    ChainObservation,
    NetworkAsset,
    Outflow,
    OutflowTransaction,
    PaymentIntent,
    Settlement,
)
from payments.scanning import network_scan
from payments.treasury import treasury_address_add
from tests.factories import make_merchant
from tests.nodes.merchant_keys import evm_account

pytestmark = pytest.mark.django_db

GAS_FUNDING = Web3.to_wei(1, "gwei") * 200_000


def scan(backend):
    return network_scan(backend=backend, now=timezone.now())


def new_intent(merchant, amount: str, asset: str = "USDC") -> PaymentIntent:
    na = NetworkAsset.objects.select_related("asset", "network").get(
        asset__code=asset, network__code="evm-local"
    )
    data = services.IntentInput(price_amount=Decimal(amount), price_currency=asset, network_asset=na)
    return services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())


def event_types(intent: PaymentIntent) -> list[str]:
    return list(intent.events.order_by("sequence").values_list("type", flat=True))


def sweep(node, token, intent: PaymentIntent, to: str, amount: int) -> str:
    """The merchant's wallet moves `amount` of the token out of the intent's address (signed with the
    address's own key: the address pays the gas)."""
    signer = evm_account(intent.address.derivation_index)
    assert signer.address.lower() == intent.address.address  # the test's key is the address's key
    w3 = node.w3
    tx = token.functions.transfer(Web3.to_checksum_address(to), amount).build_transaction(
        {
            "from": signer.address,
            "nonce": w3.eth.get_transaction_count(signer.address),
            "chainId": w3.eth.chain_id,
            "gas": 100_000,
            "maxFeePerGas": Web3.to_wei(2, "gwei"),
            "maxPriorityFeePerGas": Web3.to_wei(1, "gwei"),
        }
    )
    tx_hash = w3.eth.send_raw_transaction(signer.sign_transaction(tx).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(tx_hash)["status"] == 1
    return tx_hash.to_0x_hex()


def test_gas_funding_then_a_token_sweep_of_two_payments(evm_chain):
    node, token, backend = evm_chain
    merchant = make_merchant()
    treasury = node.accounts[2]
    treasury_address_add(
        merchant=merchant, network_code="evm-local", address=treasury, label="cold wallet", now=timezone.now()
    )
    paid = [new_intent(merchant, "10"), new_intent(merchant, "20")]
    waiting = new_intent(merchant, "5")
    stranger = new_intent(merchant, "7")
    for intent, amount in zip(paid, ("10", "20"), strict=True):
        token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units(amount))
    node.mine(2)
    scan(backend)
    assert [PaymentIntent.objects.get(pk=i.pk).state for i in paid] == ["paid", "paid"]
    before = {i.pk: event_types(i) for i in paid}

    # The treasury sends each address some ETH for gas; a stranger sends ETH to another address.
    for intent in [*paid, waiting]:
        send_eth(node.w3, treasury, intent.address.address, GAS_FUNDING)
    send_eth(node.w3, node.accounts[3], stranger.address.address, GAS_FUNDING)
    scan(backend)
    for intent in paid:
        intent = PaymentIntent.objects.get(pk=intent.pk)
        assert (intent.state, intent.flags, event_types(intent)) == ("paid", [], before[intent.pk])
        assert int(intent.amount_seen_base_units) == int(intent.amount_due_base_units)
    waiting = PaymentIntent.objects.get(pk=waiting.pk)
    assert (waiting.state, waiting.flags) == ("awaiting_payment", [])
    assert "payment.wrong_asset_detected" not in event_types(waiting)
    funding = ChainObservation.objects.get(intent=waiting)
    assert (funding.token_contract, funding.sender) == ("", treasury.lower())
    # Not from the treasury: the same deposit is a wrong asset, reported as ever.
    stranger = PaymentIntent.objects.get(pk=stranger.pk)
    assert stranger.flags == ["wrong_asset"] and "payment.wrong_asset_detected" in event_types(stranger)

    # The merchant's wallet sweeps both payments' tokens to the treasury, each address paying its gas.
    sweeps = [
        sweep(node, token, i, treasury, token_units(a)) for i, a in zip(paid, ("10", "20"), strict=True)
    ]
    report = scan(backend)
    assert report.outflows == 4  # per sweep: the token transfer out and the transaction the address sent
    for intent, tx_hash, amount in zip(paid, sweeps, ("10", "20"), strict=True):
        receipt = node.w3.eth.get_transaction_receipt(tx_hash)
        tx = OutflowTransaction.objects.get(tx_hash=tx_hash)
        assert (tx.canonical, tx.block_height, tx.block_hash) == (
            True,
            receipt["blockNumber"],
            receipt["blockHash"].to_0x_hex(),
        )
        # The gas as the node's receipt states it.
        assert int(tx.fee_base_units) == receipt["gasUsed"] * receipt["effectiveGasPrice"]
        assert tx.fee_payer == intent.address.address
        [log] = receipt["logs"]
        assert tx.destinations == [
            {
                "index": log["logIndex"],
                "address": treasury.lower(),
                "amount": str(token_units(amount)),
                "token_contract": token.address.lower(),
                "script": "",
            }
        ]
        token_out, sent = Outflow.objects.filter(transaction=tx).order_by("-index")
        assert (token_out.index, token_out.address, token_out.intent_id) == (
            log["logIndex"],
            intent.address.address,
            intent.pk,
        )
        assert (int(token_out.amount_base_units), token_out.network_asset.asset.code) == (
            token_units(amount),
            "USDC",
        )
        assert (sent.index, int(sent.amount_base_units), sent.token_contract) == (-1, 0, "")
        assert token.functions.balanceOf(Web3.to_checksum_address(intent.address.address)).call() == 0
        # Its settlement: a sweep to the treasury, one leg bearing the whole gas.
        settlement = Settlement.objects.get(transaction=tx)
        assert (settlement.kind, settlement.merchant_id, int(settlement.fee_base_units)) == (
            "sweep",
            merchant.pk,
            int(tx.fee_base_units),
        )
        [leg] = settlement.legs.all()
        assert (leg.intent_id, int(leg.amount_base_units), int(leg.fee_base_units)) == (
            intent.pk,
            token_units(amount),
            int(tx.fee_base_units),
        )
        assert (leg.fiat_currency, leg.fiat_value, leg.rate_source) == (
            "USD",
            Decimal(amount),
            "peg:USDC=USD",
        )
        # The payments are untouched by their funds leaving, and a rescan changes nothing.
    scan(backend)
    assert Outflow.objects.count() == 4
    assert {PaymentIntent.objects.get(pk=i.pk).state for i in paid} == {"paid"}

    # The merchant's wallet moves the waiting payment's ETH (its gas funding) to another payment's address:
    # the merchant's own money, never a payment there, nor another wrong asset to report.
    third = evm_account(waiting.address.derivation_index)
    consolidation = node.w3.eth.send_raw_transaction(
        third.sign_transaction(
            {
                "to": Web3.to_checksum_address(stranger.address.address),
                "value": GAS_FUNDING // 2,
                "nonce": 0,
                "chainId": node.w3.eth.chain_id,
                "gas": 21_000,
                "maxFeePerGas": Web3.to_wei(2, "gwei"),
                "maxPriorityFeePerGas": Web3.to_wei(1, "gwei"),
            }
        ).raw_transaction
    ).to_0x_hex()
    node.w3.eth.wait_for_transaction_receipt(consolidation)
    before = event_types(stranger)
    scan(backend)
    assert Settlement.objects.get(transaction__tx_hash=consolidation).kind == "consolidation"
    assert event_types(PaymentIntent.objects.get(pk=stranger.pk)) == before  # no new event for it
    stranger = PaymentIntent.objects.get(pk=stranger.pk)
    assert (stranger.state, stranger.flags) == (
        "awaiting_payment",
        ["wrong_asset"],
    )  # the stranger's ETH only

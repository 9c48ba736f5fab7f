"""Attaching a transaction hash against real nodes (anvil with a 6-decimal ERC-20, litecoind in regtest):
a payment the scanner never saw (no scan ever ran) is fetched from the node and recorded with the same
fields the scanner would have recorded (compared with what a scan of the same block records), and the
payment settles; a transaction paying another address is refused with that reason."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from devchain.anvil import send_eth, token_transfer, token_units
from payments import services
from payments.chains.bitcoin_rpc import BitcoinCoreBackend
from payments.chains.evm import EvmBackend
from payments.models import ChainObservation, Network, NetworkAsset, PaymentIntent
from support.models import AuditEntry
from support.roles import role_grant
from tests.factories import make_merchant

pytestmark = pytest.mark.django_db

NOTE = "The customer sent the hash by email, ticket 9."
SCANNED_FIELDS = (
    "tx_hash",
    "output_index",
    "address",
    "token_contract",
    "amount_base_units",
    "block_height",
    "block_hash",
    "block_time",
    "position_in_block",
    "seen_unconfirmed_at",
)


def agent_for(merchant) -> Client:
    user = User.objects.create_user(username="agnes", password="x")
    role_grant(user=user, role="support_agent", merchant_ids=[merchant.pk], actor="test")
    client = Client()
    client.force_login(user)
    return client


def new_intent(merchant, asset: str, network: str, amount: str) -> PaymentIntent:
    na = NetworkAsset.objects.select_related("asset", "network").get(asset__code=asset, network__code=network)
    data = services.IntentInput(price_amount=Decimal(amount), price_currency=asset, network_asset=na)
    return services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())


def attach(client: Client, intent: PaymentIntent, network: str, tx_hash: str):
    return client.post(
        reverse("admin:payments_paymentintent_action", args=[intent.pk, "attach_transaction"]),
        {"network": network, "tx_hash": tx_hash, "note": NOTE},
    )


def recorded(intent: PaymentIntent) -> list[tuple]:
    return list(
        ChainObservation.objects.filter(intent=intent).order_by("output_index").values_list(*SCANNED_FIELDS)
    )


def state(intent: PaymentIntent) -> str:
    return PaymentIntent.objects.get(pk=intent.pk).state


def test_an_erc20_payment_the_scanner_never_saw_is_attached_and_pays(local_usdc):
    node, token = local_usdc
    merchant = make_merchant()
    intent = new_intent(merchant, "USDC", "evm-local", "12.5")
    tx_hash = token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("12.5"))
    node.mine(2)  # USDC on evm-local needs 2 confirmations
    client = agent_for(merchant)
    response = attach(client, intent, "evm-local", tx_hash.upper().replace("0X", "0x"))
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert state(intent) == "paid"
    (observation,) = recorded(intent)
    receipt = node.w3.eth.get_transaction_receipt(tx_hash)
    block = node.w3.eth.get_block(receipt["blockNumber"])
    assert observation[:6] == (
        tx_hash.lower(),
        receipt["logs"][0]["logIndex"],
        intent.address.address,
        token.address.lower(),
        12_500_000,
        receipt["blockNumber"],
    )
    assert observation[6] == block["hash"].to_0x_hex() and observation[8] == receipt["transactionIndex"]
    # the same as a scan of that block records (a fresh database row from the scanner's own parsing)
    scanned = list(
        EvmBackend("evm-local", node.url).transfers(
            [intent.address.address], block["number"], block["number"]
        )
    )
    assert len(scanned) == 1
    assert tuple(getattr(scanned[0], f) for f in SCANNED_FIELDS[:-1]) == observation[:-1]
    (entry,) = AuditEntry.objects.filter(action="payment.transaction_attached", object_id=intent.pk)
    assert entry.actor == "agnes" and entry.reason == NOTE and entry.after["state"] == "paid"
    # attaching it again records nothing new
    attach(client, intent, "evm-local", tx_hash)
    assert len(recorded(intent)) == 1


def test_a_native_payment_is_attached(local_usdc):
    node, _ = local_usdc
    merchant = make_merchant()
    intent = new_intent(merchant, "ETH", "evm-local", "0.25")
    tx_hash = send_eth(node.w3, node.accounts[2], intent.address.address, 250_000_000_000_000_000)
    response = attach(agent_for(merchant), intent, "evm-local", tx_hash)
    assert response.status_code == 302
    ((hash_, index, _, contract, amount, *_),) = recorded(intent)
    assert (hash_, index, contract, amount) == (tx_hash.lower(), -1, "", 250_000_000_000_000_000)
    assert state(intent) in ("confirming", "paid")


def test_an_evm_transaction_to_another_address_is_refused(local_usdc):
    node, token = local_usdc
    merchant = make_merchant()
    intent = new_intent(merchant, "USDC", "evm-local", "5")
    tx_hash = token_transfer(node.w3, token, node.accounts[1], node.accounts[3], token_units("5"))
    response = attach(agent_for(merchant), intent, "evm-local", tx_hash)
    assert response.status_code == 409
    assert "pays nothing to this payment&#x27;s address" in response.content.decode()
    assert recorded(intent) == [] and state(intent) == "awaiting_payment"
    assert not AuditEntry.objects.filter(action="payment.transaction_attached").exists()


def test_an_unknown_evm_hash_is_not_found(local_usdc):
    merchant = make_merchant()
    intent = new_intent(merchant, "USDC", "evm-local", "5")
    response = attach(agent_for(merchant), intent, "evm-local", "0x" + "12" * 32)
    assert response.status_code == 409 and "does not know this transaction" in response.content.decode()


@pytest.fixture
def regtest(litecoind):
    """litecoin-regtest pointed at this node; LTC needs 2 confirmations; no scan ever runs."""
    network = Network.objects.get(code="litecoin-regtest")
    network.rpc_url = litecoind.url
    network.scan_start_height = litecoind.height()
    network.save()
    NetworkAsset.objects.filter(network=network, asset__code="LTC").update(default_confirmations=2)
    return litecoind


def test_a_litecoin_payment_mined_before_the_scanners_start_is_attached_and_pays(regtest):
    node = regtest
    merchant = make_merchant()
    intent = new_intent(merchant, "LTC", "litecoin-regtest", "0.5")
    node.send(node.new_address(), "0.1")  # another transaction in the block: the position counts
    txid = node.send(intent.address.address, "0.5")
    (block_hash,) = node.mine(1)
    node.mine(1)
    Network.objects.filter(code="litecoin-regtest").update(scan_start_height=node.height() + 1)
    client = agent_for(merchant)
    assert attach(client, intent, "litecoin-regtest", txid).status_code == 302
    assert state(intent) == "paid"
    (observation,) = recorded(intent)
    block = node.rpc("getblock", block_hash, 2)
    position = [tx["txid"] for tx in block["tx"]].index(txid)
    vout = next(
        o["n"] for o in node.rpc("getrawtransaction", txid, True)["vout"] if o["value"] == Decimal("0.5")
    )
    assert observation[:6] == (txid, vout, intent.address.address, "", 50_000_000, block["height"])
    assert (observation[6], observation[8]) == (block_hash, position) and position > 0
    backend = BitcoinCoreBackend("litecoin-regtest", node.url, hrp="rltc")
    (scanned,) = backend.transfers([intent.address.address], block["height"], block["height"])
    assert tuple(getattr(scanned, f) for f in SCANNED_FIELDS[:-1]) == observation[:-1]


def test_an_unconfirmed_litecoin_payment_is_attached_as_seen_now(regtest):
    node = regtest
    merchant = make_merchant()
    intent = new_intent(merchant, "LTC", "litecoin-regtest", "0.5")
    txid = node.send(intent.address.address, "0.5")
    before = timezone.now()
    assert attach(agent_for(merchant), intent, "litecoin-regtest", txid).status_code == 302
    (observation,) = recorded(intent)
    assert observation[5] is None and observation[9] >= before
    assert state(intent) == "detected"


def test_a_litecoin_transaction_to_another_address_is_refused(regtest):
    node = regtest
    merchant = make_merchant()
    intent = new_intent(merchant, "LTC", "litecoin-regtest", "0.5")
    txid = node.send(node.new_address(), "0.5")
    node.mine(1)
    response = attach(agent_for(merchant), intent, "litecoin-regtest", txid)
    assert response.status_code == 409 and "it pays another address" in response.content.decode()
    assert recorded(intent) == []
    unknown = attach(agent_for_again(merchant), intent, "litecoin-regtest", "ab" * 32)
    assert unknown.status_code == 409 and "does not know this transaction" in unknown.content.decode()


def agent_for_again(merchant) -> Client:
    client = Client()
    client.force_login(User.objects.get(username="agnes"))
    return client


def test_esplora_finds_the_same_transfers_as_core(regtest):
    """The Esplora backend (for merchants without a node) reads one transaction as Core RPC does."""
    from payments.chains.base import TransactionNotFound
    from payments.chains.esplora import EsploraBackend
    from tests.nodes.esplora_server import EsploraServer

    node = regtest
    watched = [node.new_address(), node.new_address()]
    node.send(node.new_address(), "0.1")
    txid = node.rpc("sendmany", "", {watched[0]: "0.2", watched[1]: "0.3"})
    now = timezone.now()
    core = BitcoinCoreBackend("litecoin-regtest", node.url, hrp="rltc")
    with EsploraServer(node) as server:
        esplora = EsploraBackend("litecoin-regtest", server.url, hrp="rltc")
        pending = esplora.transaction_transfers(txid, watched, now)
        assert pending == core.transaction_transfers(txid, watched, now)
        assert sorted(t.amount_base_units for t in pending) == [20_000_000, 30_000_000]
        assert {t.seen_unconfirmed_at for t in pending} == {now}
        (block_hash,) = node.mine(1)
        position = node.rpc("getblock", block_hash, 1)["tx"].index(txid)
        mined = esplora.transaction_transfers(txid, watched, now)
        assert mined == core.transaction_transfers(txid, watched, now)
        assert {(t.block_height, t.block_hash, t.position_in_block) for t in mined} == {
            (node.height(), block_hash, position)
        }
        assert position > 0
        for backend in (esplora, core):
            with pytest.raises(TransactionNotFound):
                backend.transaction_transfers("ab" * 32, watched, now)

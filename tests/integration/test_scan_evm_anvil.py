"""Chain watching on a real EVM node (anvil) with a real 6-decimal ERC-20: the scanner turns blocks
into observations, and the payment's state path and events follow."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from hexbytes import HexBytes
from web3 import Web3

from devchain.anvil import AnvilNode, deploy_token, mint, send_eth, token_transfer, token_units
from devchain.pay import main as pay_uri
from payments import services
from payments.chains.base import ChainNodeError
from payments.chains.evm import EvmBackend
from payments.models import Asset, ChainObservation, Network, NetworkAsset, PaymentIntent
from payments.scanning import ChainMovedError, network_scan
from tests.factories import make_merchant

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_usdc(local_usdc):
    """The shared evm-local + USDC set-up, with the backend the scanner would build."""
    node, token = local_usdc
    return node, token, EvmBackend("evm-local", node.url)


def new_intent(amount: str, asset: str = "USDC", *, now=None, merchant=None) -> PaymentIntent:
    na = NetworkAsset.objects.select_related("asset", "network").get(
        asset__code=asset, network__code="evm-local"
    )
    data = services.IntentInput(price_amount=Decimal(amount), price_currency=asset, network_asset=na)
    merchant = merchant or make_merchant()
    return services.payment_intent_create(merchant=merchant, data=data, now=now or timezone.now())


def events(intent: PaymentIntent) -> list[str]:
    return list(intent.events.order_by("sequence").values_list("type", flat=True))


def path(intent: PaymentIntent) -> list[str]:
    return list(intent.transitions.order_by("id").values_list("to_state", flat=True))


def scan(backend):
    return network_scan(backend=backend, now=timezone.now())


def test_exact_payment_becomes_paid_after_confirmations(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("49.5")
    scan(backend)
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("49.5"))
    report = scan(backend)
    assert report.transfers == 1
    intent.refresh_from_db(fields=["amount_seen_base_units"])
    assert PaymentIntent.objects.get(pk=intent.pk).state == "confirming"
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "confirming", "paid"]
    assert int(intent.amount_confirmed_base_units) == 49_500_000
    assert list(intent.events.order_by("sequence").values_list("type", flat=True))[-2:] == [
        "payment.confirming",
        "payment.paid",
    ]
    # scanning again finds nothing new and changes nothing
    scan(backend)
    assert ChainObservation.objects.count() == 1 and path(intent) == [
        "awaiting_payment",
        "confirming",
        "paid",
    ]


def test_reorg_drops_a_paid_payment_and_it_goes_back_then_reinclusion_pays_again(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10")
    tx_hash = token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    raw = node.rpc("eth_getRawTransactionByHash", [tx_hash])
    node.mine(2)
    scan(backend)
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"
    first_block = ChainObservation.objects.get().block_hash
    node.reorg(
        3
    )  # replaces the last 3 blocks, the payment's included (not the mint): the transfer is dropped
    report = scan(backend)
    assert report.reorg_fork is not None
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "awaiting_payment"
    assert path(intent)[-2:] == ["paid", "awaiting_payment"]
    assert ChainObservation.objects.get().canonical is False
    # the same signed transaction is mined again, in another block
    assert node.rpc("eth_sendRawTransaction", [raw]) == tx_hash
    node.mine(2)
    assert node.rpc("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent)[-2:] == ["awaiting_payment", "paid"]
    observation = ChainObservation.objects.get()
    assert observation.canonical and observation.tx_hash == tx_hash and observation.block_hash != first_block
    assert events(intent)[-3:] == ["payment.paid", "payment.awaiting_payment", "payment.paid"]


class ReorgWhileReading(EvmBackend):
    """The node reorganises (dropping the payment) after the scanner has read the batch's activity and
    before it moves its cursor: what the chaos run met once, a scan racing `anvil_reorg`."""

    def __init__(self, node: AnvilNode, url: str):
        super().__init__("evm-local", url)
        self.node, self.reorg_depth = node, None

    def activity(self, *args, **kwargs):
        items = list(super().activity(*args, **kwargs))
        if self.reorg_depth:
            self.node.reorg(self.reorg_depth)
            self.reorg_depth = None
        return items


def test_a_reorg_while_a_batch_is_read_records_nothing_of_it(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10")
    scan(backend)
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(2)
    racing = ReorgWhileReading(node, node.url)
    racing.reorg_depth = 3  # the payment's block and the two after it, replaced: the transfer is dropped
    with pytest.raises(ChainMovedError, match="changed while blocks"):
        scan(racing)
    assert not ChainObservation.objects.exists(), "what was read from the old chain is not recorded"
    scan(backend)  # reads the new chain
    assert not ChainObservation.objects.exists()
    assert PaymentIntent.objects.get(pk=intent.pk).state == "awaiting_payment"


class ReorgBeforeTheBatch(EvmBackend):
    """The node reorganises after the scanner found its cursor's block still on the chain and before it
    reads the next batch: the chain under the cursor changes where the fork check has already looked."""

    def __init__(self, node: AnvilNode, url: str, *, at_height: int, depth: int):
        super().__init__("evm-local", url)
        self.node, self.at_height, self.depth = node, at_height, depth

    def block_ref(self, height: int):
        if self.depth and height == self.at_height:  # the batch's first read of its last block
            self.node.reorg(self.depth)
            self.depth = 0
        return super().block_ref(height)


def test_a_reorg_after_the_fork_check_and_before_the_batch_drops_what_it_replaced(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10")
    scan(backend)
    tx = token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(1)
    scan(backend)
    assert ChainObservation.objects.get().canonical
    mined_in = node.w3.eth.get_transaction_receipt(tx)["blockNumber"]
    node.mine(1)  # the next batch: one block past the cursor
    tip = node.block_number()
    racing = ReorgBeforeTheBatch(node, node.url, at_height=tip, depth=tip - mined_in + 1)
    with contextlib.suppress(ChainMovedError):
        scan(racing)
    assert racing.depth == 0, "the reorg happened inside the scan"
    scan(backend)
    node.mine(1)
    scan(backend)
    assert not node.w3.eth.get_block(mined_in)["transactions"], "the payment's transaction is gone"
    observation = ChainObservation.objects.get()
    assert not observation.canonical, "a transfer the chain no longer has is not evidence"
    assert PaymentIntent.objects.get(pk=intent.pk).state == "awaiting_payment"


class LogsFromAReplacedBlock(EvmBackend):
    """A node that answers `eth_getLogs` from a block the chain has since replaced at the same height (a
    load-balanced provider whose nodes disagree for a moment, or a reorg between the two calls)."""

    def __init__(self, url: str):
        super().__init__("evm-local", url)
        get_logs = self.w3.eth.get_logs
        self.w3.eth.get_logs = lambda query: [
            dict(log, blockHash=HexBytes(b"\x11" * 32)) for log in get_logs(query)
        ]


def test_a_token_transfer_read_from_a_replaced_block_is_not_recorded(local_usdc):
    """A log names its block: the transfer carries that hash, not the chain's block at its height now, so
    the scan's check sees the difference and rolls the batch back."""
    node, token, backend = local_usdc
    intent = new_intent("10")
    scan(backend)
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    with pytest.raises(ChainMovedError):
        scan(LogsFromAReplacedBlock(node.url))
    assert not ChainObservation.objects.exists()
    scan(backend)
    assert ChainObservation.objects.get().block_hash == node.w3.eth.get_block("latest")["hash"].to_0x_hex()


def test_a_replaced_blocks_log_is_caught_beside_a_transaction_of_the_chains_block_at_its_height(local_usdc):
    """The log from the replaced block and an ETH payment read from the chain's block at the same height:
    both hashes are checked, not the last one read (which let the log through)."""
    node, token, backend = local_usdc
    intent = new_intent("10")
    scan(backend)
    node.rpc("evm_setAutomine", [False])
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"), wait=False)
    send_eth(node.w3, node.accounts[2], intent.address.address, 10**15, wait=False)
    node.mine(1)
    node.rpc("evm_setAutomine", [True])
    with pytest.raises(ChainMovedError, match="at height"):
        scan(LogsFromAReplacedBlock(node.url))
    assert not ChainObservation.objects.exists()
    scan(backend)
    assert ChainObservation.objects.count() == 2


class FailsOnce(EvmBackend):
    """A node that fails the first batch's read (a timeout, a restart)."""

    failed = False

    def activity(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise ChainNodeError("evm-local: eth_getLogs timed out")
        return super().activity(*args, **kwargs)


def test_a_failed_first_scan_keeps_its_start_and_misses_nothing_after_it(local_usdc):
    """A network watched from today's tip (no start height): its first batch fails; a payment is mined
    before the next scan, in blocks under the tip that scan finds. It is seen."""
    node, token, _ = local_usdc
    Network.objects.filter(code="evm-local").update(scan_start_height=None)
    intent = new_intent("10")
    failing = FailsOnce("evm-local", node.url)
    with pytest.raises(ChainNodeError):
        scan(failing)
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(2)
    scan(failing)
    assert ChainObservation.objects.get().amount_base_units == 10_000_000
    assert PaymentIntent.objects.get(pk=intent.pk).state == "paid"


def test_underpayment_then_top_up_to_paid(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10")
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("6"))
    scan(backend)
    node.mine(1)
    scan(backend)
    assert PaymentIntent.objects.get(pk=intent.pk).state == "underpaid"
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("4"))
    scan(backend)
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "detected", "underpaid", "confirming", "paid"]
    assert int(intent.amount_confirmed_base_units) == 10_000_000


def test_overpayment(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10")
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("12.5"))
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "overpaid"]
    assert intent.amount_confirmed_base_units == 12_500_000


def test_second_full_payment_is_flagged_duplicate(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10")
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(1)
    scan(backend)
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "paid"]
    assert intent.flags == ["duplicate_payment"]
    assert int(intent.amount_seen_base_units) == 10_000_000
    assert events(intent)[-1] == "payment.duplicate_payment_detected"


def test_payment_after_expiry_is_late_and_opens_review(local_usdc):
    node, token, backend = local_usdc
    intent = new_intent("10", now=timezone.now() - timedelta(minutes=20))
    services.expire_due_intents(now=timezone.now())
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("10"))
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "expired"]
    assert intent.flags == ["late_payment"]
    assert events(intent)[-1] == "payment.late_payment_detected"


def test_other_token_to_the_address_is_wrong_asset(local_usdc, merchant, api):
    node, _token, backend = local_usdc
    other = deploy_token(node.w3, node.accounts[0])
    mint(node.w3, other, node.accounts[0], node.accounts[1], token_units("100"))
    intent = new_intent("10", merchant=merchant)
    tx_hash = token_transfer(node.w3, other, node.accounts[1], intent.address.address, 10_000_000)
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "awaiting_payment"
    assert intent.flags == ["wrong_asset"]
    assert "payment.wrong_asset_detected" in events(intent)
    observation = ChainObservation.objects.get()
    assert observation.token_contract == other.address.lower() and observation.network_asset is None
    # a token the gateway does not know: its contract and raw amount, no asset, decimals or value
    (tx,) = api.get(f"/api/v1/payment-intents/{intent.pk}").json()["transactions"]
    log_index = int(node.rpc("eth_getTransactionReceipt", [tx_hash])["logs"][0]["logIndex"], 16)
    assert tx["tx_hash"] == tx_hash.lower() and tx["output_index"] == log_index
    assert tx["kind"] == "token_transfer" and tx["token_contract"] == other.address.lower()
    assert tx["asset"] is None and tx["decimals"] is None
    assert tx["amount"] == {"value": None, "base_units": "10000000"}


def test_funds_on_another_evm_network_are_wrong_network(local_usdc, merchant, api):
    _node, token, backend = local_usdc
    with AnvilNode(chain_id=1337) as second:
        second_token = deploy_token(second.w3, second.accounts[0])
        assert second_token.address == token.address  # same deployer and nonce: tell chains apart by id
        mint(second.w3, second_token, second.accounts[0], second.accounts[1], token_units("100"))
        other_net = Network.objects.create(
            code="evm-local-2",
            name="Second local chain",
            chain="evm",
            chain_id=1337,
            uri_scheme="ethereum",
            is_testnet=True,
            rpc_url=second.url,
            scan_start_height=second.block_number(),
        )
        NetworkAsset.objects.create(
            network=other_net,
            asset=Asset.objects.get(code="USDC"),
            contract_address=token.address.lower(),
            decimals=6,
            default_confirmations=2,
        )
        intent = new_intent("10", merchant=merchant)
        token_transfer(second.w3, second_token, second.accounts[1], intent.address.address, 2_500_000)
        second.mine(1)
        scan(EvmBackend("evm-local-2", second.url))
        scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "awaiting_payment"
    assert intent.flags == ["wrong_network"]
    assert "payment.wrong_network_detected" in events(intent)
    # USDC as the second network knows it: 6 decimals, 2.5 USDC
    (tx,) = api.get(f"/api/v1/payment-intents/{intent.pk}").json()["transactions"]
    assert tx["network"] == "evm-local-2" and tx["asset"] == "USDC" and tx["decimals"] == 6
    assert tx["amount"] == {"value": "2.500000", "base_units": "2500000"}
    st = Client().get(f"/pay/{intent.checkout_token}/status").json()
    assert st["wrong_network"] is True and st["wrong_asset"] is False
    assert st["title"] == "Funds arrived on the wrong network"
    assert "another network than Local development chain (anvil)" in st["detail"]
    assert "contact the shop" in st["detail"]


def test_native_eth_payment(local_usdc):
    node, _, backend = local_usdc
    intent = new_intent("0.25", asset="ETH")
    send_eth(node.w3, node.accounts[2], intent.address.address, 250_000_000_000_000_000)
    node.mine(1)
    scan(backend)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert path(intent) == ["awaiting_payment", "paid"]
    assert ChainObservation.objects.get().output_index == -1


def test_many_watched_addresses_match_locally_with_the_same_result(local_usdc):
    """Beyond `address_chunk` watched addresses the backend fetches all Transfer logs and matches locally;
    it must find exactly what the `to`-filtered query finds."""
    node, token, _ = local_usdc
    merchant = make_merchant()
    intents = [new_intent("1", merchant=merchant) for _ in range(5)]
    start = node.block_number() + 1
    for intent in intents[:3]:
        token_transfer(node.w3, token, node.accounts[1], intent.address.address, token_units("1"))
    token_transfer(node.w3, token, node.accounts[1], node.accounts[3], token_units("1"))  # not watched
    end = node.block_number()
    watched = [i.address.address for i in intents]
    filtered = list(EvmBackend("evm-local", node.url, scan_native=False).transfers(watched, start, end))
    local = EvmBackend("evm-local", node.url, scan_native=False, address_chunk=2, unfiltered_block_chunk=2)
    assert list(local.transfers(watched, start, end)) == filtered
    assert {t.address for t in filtered} == {i.address.address for i in intents[:3]}


def parse_eip681_transfer(uri: str) -> tuple[str, int, str, int]:
    """(token contract, chain id, recipient, amount) of an ERC-20 `transfer` request, read with the
    grammar of EIP-681: `ethereum:<contract>@<chain id>/transfer?address=<to>&uint256=<amount>`."""
    parts = urlsplit(uri)
    assert parts.scheme == "ethereum", uri
    target, _, rest = parts.path.partition("@")
    chain_id, _, function = rest.partition("/")
    assert function == "transfer", uri
    query = parse_qs(parts.query, strict_parsing=True)
    assert set(query) == {"address", "uint256"} and all(len(v) == 1 for v in query.values()), uri
    return target, int(chain_id), query["address"][0], int(query["uint256"][0])


def test_underpaid_intent_gives_the_remaining_amount_uri_in_api_and_events(local_usdc, merchant, api):
    node, token, backend = local_usdc
    intent = new_intent("10", merchant=merchant)
    due = 10_000_000  # 10 USDC of a 6-decimal token
    body = api.get(f"/api/v1/payment-intents/{intent.pk}").json()
    assert body["amount_remaining"] is None and body["payment_uri_remaining"] is None
    # the demo payer pays half of the intent's own payment URI
    assert pay_uri([body["payment_uri"], "--fraction", "0.5", "--rpc", node.url]) == 0
    node.mine(2)
    scan(backend)
    received = token.functions.balanceOf(Web3.to_checksum_address(intent.address.address)).call()
    assert 0 < received < due
    body = api.get(f"/api/v1/payment-intents/{intent.pk}").json()
    assert body["state"] == "underpaid"
    assert body["amount_remaining"] == {
        "value": f"{Decimal(due - received) / 10**6:.6f}",
        "base_units": str(due - received),
    }
    contract, chain_id, to, amount = parse_eip681_transfer(body["payment_uri_remaining"])
    assert amount == due - received
    assert contract == token.address and chain_id == node.w3.eth.chain_id
    assert to.lower() == intent.address.address
    assert parse_eip681_transfer(body["payment_uri"])[3] == due  # the original request is unchanged
    underpaid = PaymentIntent.objects.get(pk=intent.pk).events.get(type="payment.underpaid").payload
    assert underpaid["payment_uri_remaining"] == body["payment_uri_remaining"]
    assert underpaid["amount_remaining"] == body["amount_remaining"]
    # a wallet paying the remaining URI completes the payment; nothing remains
    assert pay_uri([body["payment_uri_remaining"], "--rpc", node.url]) == 0
    node.mine(2)
    scan(backend)
    assert token.functions.balanceOf(Web3.to_checksum_address(intent.address.address)).call() == due
    body = api.get(f"/api/v1/payment-intents/{intent.pk}").json()
    assert body["state"] == "paid"
    assert body["amount_remaining"] is None and body["payment_uri_remaining"] is None


def test_ether_sent_to_a_usdc_intent_is_shown_as_ether_and_the_customer_is_told(local_usdc, merchant, api):
    node, _token, backend = local_usdc
    intent = new_intent("10", merchant=merchant)
    tx_hash = send_eth(node.w3, node.accounts[2], intent.address.address, 500_000_000_000_000_000)  # 0.5 ETH
    node.mine(1)
    scan(backend)
    body = api.get(f"/api/v1/payment-intents/{intent.pk}").json()
    assert body["state"] == "awaiting_payment" and body["flags"] == ["wrong_asset"]
    (tx,) = body["transactions"]
    assert tx["tx_hash"] == tx_hash.lower() and tx["network"] == "evm-local"
    assert tx["kind"] == "native" and tx["token_contract"] is None
    assert tx["asset"] == "ETH" and tx["decimals"] == 18
    assert tx["amount"] == {"value": "0.500000000000000000", "base_units": "500000000000000000"}
    event = PaymentIntent.objects.get(pk=intent.pk).events.get(type="payment.wrong_asset_detected")
    assert event.payload["transactions"] == body["transactions"]
    # the customer is told in plain words, and can still pay the right asset while the window is open
    st = Client().get(f"/pay/{intent.checkout_token}/status").json()
    assert st["wrong_asset"] is True and st["wrong_network"] is False
    assert st["title"] == "Funds arrived in the wrong currency"
    assert "another currency than USDC" in st["detail"] and "contact the shop" in st["detail"]
    assert st["show_payment"] is True
    html = Client().get(f"/pay/{intent.checkout_token}").content.decode()
    assert "Funds arrived in the wrong currency" in html and "Waiting for your payment" not in html
    assert "Please contact the shop about them." in html
    german = Client().get(f"/pay/{intent.checkout_token}", HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert "Geld in der falschen Währung eingegangen" in german
    assert "Bitte wenden Sie sich deswegen an den Shop." in german


def test_usdc_sent_to_an_expired_ether_intent_fails_and_names_the_token(local_usdc, merchant, api):
    node, token, backend = local_usdc
    intent = new_intent("0.25", asset="ETH", merchant=merchant, now=timezone.now() - timedelta(minutes=20))
    token_transfer(node.w3, token, node.accounts[1], intent.address.address, 7_250_000)  # 7.25 USDC
    node.mine(1)
    scan(backend)
    body = api.get(f"/api/v1/payment-intents/{intent.pk}").json()
    assert body["state"] == "failed" and body["flags"] == ["wrong_asset"]
    (tx,) = body["transactions"]
    assert tx["kind"] == "token_transfer" and tx["token_contract"] == token.address.lower()
    assert tx["asset"] == "USDC" and tx["decimals"] == 6
    assert tx["amount"] == {"value": "7.250000", "base_units": "7250000"}
    st = Client().get(f"/pay/{intent.checkout_token}/status").json()
    assert st["state"] == "failed" and st["wrong_asset"] is True and not st["show_payment"]
    assert st["title"] == "Funds arrived in the wrong currency"
    assert st["detail"] == (
        "Funds in another currency than ETH arrived at this address. They do not count for this payment. "
        "Please contact the shop about them."
    )

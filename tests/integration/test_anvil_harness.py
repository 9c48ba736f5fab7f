"""The anvil harness itself: a real EVM node, a real ERC-20, logs, two chains at once, and a reorg.

These tests fail (never skip) when anvil cannot be installed or started: the chain tests depend on it.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from eth_account import Account
from web3 import Web3

from devchain.anvil import (
    TRANSFER_TOPIC,
    AnvilError,
    AnvilNode,
    address_topic,
    deploy_token,
    mint,
    send_eth,
    token_transfer,
    token_units,
)


def fresh_address() -> str:
    return Account.create().address


def test_transfer_topic_is_the_erc20_event_signature():
    assert TRANSFER_TOPIC == "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    assert address_topic("0x00000000000000000000000000000000000000aB") == "0x" + "0" * 62 + "ab"
    assert token_units("49.5") == 49_500_000
    with pytest.raises(ValueError):
        token_units("0.0000001")


def test_node_answers_and_binds_localhost_only(anvil):
    assert anvil.url.startswith("http://127.0.0.1:")
    assert anvil.w3.eth.chain_id == 31337
    assert len(anvil.accounts) == 10
    assert anvil.w3.eth.get_balance(anvil.accounts[0]) > 10**21  # funded dev accounts
    start = anvil.block_number()
    assert anvil.mine(3) == start + 3


def test_mint_transfer_balance_and_transfer_log(anvil_token):
    node, token = anvil_token
    w3, owner = node.w3, node.accounts[0]
    assert token.functions.name().call() == "Test USD Coin"
    assert token.functions.symbol().call() == "USDC"
    assert token.functions.decimals().call() == 6

    mint(w3, token, owner, owner, token_units(1_000))
    assert token.functions.balanceOf(owner).call() == 1_000_000_000

    customer = fresh_address()
    tx_hash = token_transfer(w3, token, owner, customer, token_units("49.5"))
    assert tx_hash.startswith("0x") and len(tx_hash) == 66
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1

    assert token.functions.balanceOf(customer).call() == 49_500_000
    assert token.functions.balanceOf(owner).call() == 950_500_000
    assert token.functions.totalSupply().call() == 1_000_000_000

    # Raw eth_getLogs, filtered on the Transfer topic and the padded `to` topic (what a scanner does).
    log_filter = {
        "address": token.address,
        "fromBlock": "0x0",
        "toBlock": "latest",
        "topics": [TRANSFER_TOPIC, None, address_topic(customer)],
    }
    logs = node.rpc("eth_getLogs", [log_filter])
    assert len(logs) == 1
    (log,) = logs
    assert log["transactionHash"] == tx_hash
    assert int(log["blockNumber"], 16) == receipt["blockNumber"]
    assert log["blockHash"] == receipt["blockHash"].to_0x_hex()
    assert log["topics"][1] == address_topic(owner)
    assert int(log["data"], 16) == 49_500_000

    # The same through web3, decoded with the ABI.
    web3_logs = w3.eth.get_logs({**log_filter, "fromBlock": 0})
    assert len(web3_logs) == 1
    event = token.events.Transfer().process_log(web3_logs[0])
    assert event["args"]["to"] == customer
    assert event["args"]["from"] == owner
    assert event["args"]["value"] == 49_500_000

    # Nothing for an address that was never paid.
    assert (
        node.rpc(
            "eth_getLogs", [{**log_filter, "topics": [TRANSFER_TOPIC, None, address_topic(fresh_address())]}]
        )
        == []
    )


def test_transfer_from_needs_allowance(anvil_token):
    node, token = anvil_token
    w3, owner, spender = node.w3, node.accounts[0], node.accounts[1]
    mint(w3, token, owner, owner, token_units(10))
    with pytest.raises(Exception, match="insufficient allowance"):
        token.functions.transferFrom(owner, spender, 1).transact({"from": spender})
    token.functions.approve(spender, token_units(3)).transact({"from": owner})
    assert token.functions.allowance(owner, spender).call() == 3_000_000
    token.functions.transferFrom(owner, spender, token_units(2)).transact({"from": spender})
    assert token.functions.balanceOf(spender).call() == 2_000_000
    assert token.functions.allowance(owner, spender).call() == 1_000_000


def test_two_chains_at_once_give_the_token_the_same_address(anvil):
    with AnvilNode(chain_id=1337) as other:
        assert other.port != anvil.port
        assert anvil.w3.eth.chain_id == 31337
        assert other.w3.eth.chain_id == 1337
        # anvil's dev accounts come from the same mnemonic on every node.
        assert other.accounts[0] == anvil.accounts[0]
        assert anvil.w3.eth.get_transaction_count(anvil.accounts[0]) == 0
        assert other.w3.eth.get_transaction_count(other.accounts[0]) == 0

        token_a = deploy_token(anvil.w3, anvil.accounts[0])
        token_b = deploy_token(other.w3, other.accounts[0])
        # Same deployer, same nonce: same address on both chains. Tell chains apart by chain id only.
        assert token_a.address == token_b.address

        customer = fresh_address()
        mint(other.w3, token_b, other.accounts[0], customer, token_units(5))
        assert token_b.functions.balanceOf(customer).call() == 5_000_000
        assert token_a.functions.balanceOf(customer).call() == 0
    assert not other.running


def test_reorg_of_depth_two_drops_a_transfer(anvil_token):
    node, token = anvil_token
    w3, owner = node.w3, node.accounts[0]
    mint(w3, token, owner, owner, token_units(1_000))
    customer = fresh_address()

    tx_hash = token_transfer(w3, token, owner, customer, token_units("49.5"))
    paid_height = w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]
    tip = node.mine(1)
    assert tip == paid_height + 1
    old_hash = node.block_hash(paid_height)
    assert token.functions.balanceOf(customer).call() == 49_500_000

    # Depth counts back from the tip: to drop block B at tip T, depth >= T - B + 1 = 2.
    node.reorg(2)

    assert node.block_number() == tip  # same height, new blocks
    assert node.block_hash(paid_height) != old_hash
    assert node.rpc("eth_getTransactionReceipt", [tx_hash]) is None
    assert node.rpc("eth_getTransactionByHash", [tx_hash]) is None  # dropped, not back in the mempool
    assert token.functions.balanceOf(customer).call() == 0
    logs = node.rpc(
        "eth_getLogs",
        [
            {
                "fromBlock": "0x0",
                "toBlock": "latest",
                "topics": [TRANSFER_TOPIC, None, address_topic(customer)],
            }
        ],
    )
    assert logs == []
    # The chain goes on after the reorg.
    assert node.mine(1) == tip + 1


def test_snapshot_revert_and_eth_transfer(anvil):
    w3 = anvil.w3
    customer = fresh_address()
    snapshot = anvil.snapshot()
    tx_hash = send_eth(w3, anvil.accounts[0], customer, 10**18)
    assert w3.eth.get_balance(customer) == 10**18
    assert w3.eth.get_transaction(tx_hash)["value"] == 10**18
    assert anvil.revert(snapshot)
    assert w3.eth.get_balance(customer) == 0


def test_no_mining_keeps_transactions_pending_until_mined():
    with AnvilNode(chain_id=31337, no_mining=True) as node:
        customer = fresh_address()
        start = node.block_number()
        tx_hash = send_eth(node.w3, node.accounts[0], customer, 1, wait=False)
        assert node.rpc("eth_getTransactionReceipt", [tx_hash]) is None
        assert node.rpc("eth_getTransactionByHash", [tx_hash])["blockNumber"] is None
        assert node.mine() == start + 1
        assert int(node.rpc("eth_getTransactionReceipt", [tx_hash])["blockNumber"], 16) == start + 1


def test_stop_ends_the_process_and_frees_the_port():
    node = AnvilNode(chain_id=31337)
    with node:
        url = node.url
        process = node.process
    assert process is not None and process.poll() is not None
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, data=b"{}", timeout=1)


def test_a_node_that_cannot_start_raises_a_clear_error():
    with pytest.raises(AnvilError, match="anvil exited"):
        with AnvilNode(chain_id=31337, extra_args=["--no-such-flag"]):
            pass


def test_web3_8_hex_forms():
    # web3 8: HexBytes.hex() has no 0x prefix; to_0x_hex() has it.
    digest = Web3.keccak(text="x")
    assert not digest.hex().startswith("0x")
    assert digest.to_0x_hex() == "0x" + digest.hex()

"""One counted transfer against what a node returned for its transaction: each finding, and the transfer as
the chain has it (what the payment is evaluated on again)."""

from __future__ import annotations

from payments import policy
from payments.chains.base import Transfer
from reconciliation.verification import check_transfer

ADDRESS = "0x" + "ab" * 20
TOKEN = "0x" + "cd" * 20
STORED = policy.ObservationFacts(
    network="evm-local",
    tx_hash="0xt",
    output_index=3,
    token_contract=TOKEN,
    amount=10,
    block_height=7,
    block_hash="0xb7",
)


def chain(**changes) -> list[Transfer]:
    fields = {
        "block_height": 7,
        "block_hash": "0xb7",
        "amount_base_units": 10,
        "output_index": 3,
        "token_contract": TOKEN,
    }
    fields |= changes
    return [Transfer("evm-local", "0xt", address=ADDRESS, **fields)]


def test_as_stored_is_no_finding():
    finding, truth = check_transfer(STORED, ADDRESS, chain())
    assert finding is None and truth == STORED


def test_each_difference_is_its_finding_and_the_truth_is_the_chains():
    cases = {
        "not_found": None,
        "no_transfer": chain(output_index=4),
        "not_in_block": chain(block_height=None, block_hash=""),
        "other_block": chain(block_height=9, block_hash="0xb9"),
        "amount": chain(amount_base_units=9),
    }
    for problem, answer in cases.items():
        finding, truth = check_transfer(STORED, ADDRESS, answer)
        assert finding is not None and finding.problem == problem, problem
        if problem in ("not_found", "no_transfer", "not_in_block"):
            assert truth.canonical is False  # not evidence any more: evaluated without it
        elif problem == "other_block":
            assert (truth.block_height, truth.block_hash, truth.canonical) == (9, "0xb9", True)
        else:
            assert truth.amount == 9
    other_token = check_transfer(STORED, ADDRESS, chain(token_contract="0x" + "ee" * 20))[0]
    assert other_token.problem == "no_transfer"

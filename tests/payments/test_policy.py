"""The pure evaluation: rules by example, and properties over any arrival order and duplication."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from payments import policy
from payments.policy import IntentFacts, ObservationFacts, ResolutionFacts, evaluate

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(minutes=15)
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"


def intent(**overrides) -> IntentFacts:
    base = {
        "amount_due": 1_000_000,
        "network": "ethereum",
        "token_contract": USDC,
        "required_confirmations": 3,
        "expires_at": EXPIRES,
    }
    return IntentFacts(**(base | overrides))


def obs(tx: str, amount: int = 1_000_000, *, height: int | None = 100, index: int = 0, **overrides):
    base = {
        "network": "ethereum",
        "tx_hash": tx,
        "output_index": index,
        "token_contract": USDC,
        "amount": amount,
        "block_height": height,
        "block_hash": f"h{height}" if height else "",
        "position_in_block": 0,
        "block_time": T0 + timedelta(minutes=1) if height else None,
        "seen_unconfirmed_at": None if height else T0 + timedelta(minutes=1),
    }
    return ObservationFacts(**(base | overrides))


def run(observations, *, tip: int = 102, now: datetime = T0 + timedelta(minutes=5), resolutions=(), **kw):
    return evaluate(intent(**kw), observations, list(resolutions), {"ethereum": tip}, now)


# --- rules by example ---------------------------------------------------------------------------------


def test_no_funds_awaits_then_expires():
    assert run([]).state == policy.AWAITING_PAYMENT
    assert run([], now=EXPIRES).state == policy.EXPIRED


def test_created_without_asset_then_expired():
    facts = intent(network=None, amount_due=None)
    assert evaluate(facts, [], [], {}, T0).state == policy.CREATED
    assert evaluate(facts, [], [], {}, EXPIRES).state == policy.EXPIRED


def test_exact_payment_moves_detected_confirming_paid():
    assert run([obs("a", height=None)]).state == policy.DETECTED
    assert run([obs("a", height=101)], tip=102).state == policy.CONFIRMING  # 2 of 3
    verdict = run([obs("a", height=100)], tip=102)
    assert verdict.state == policy.PAID
    assert verdict.amount_confirmed == verdict.amount_seen == 1_000_000
    assert verdict.confirmations == 3


def test_underpaid_then_top_up_paid():
    assert run([obs("a", 600_000)]).state == policy.UNDERPAID
    assert run([obs("a", 600_000), obs("b", 400_000, height=None)]).state == policy.DETECTED
    assert run([obs("a", 600_000), obs("b", 400_000)]).state == policy.PAID


def test_underpayment_within_tolerance_is_paid():
    assert run([obs("a", 990_000)], underpayment_tolerance_bps=100).state == policy.PAID
    assert run([obs("a", 989_999)], underpayment_tolerance_bps=100).state == policy.UNDERPAID


def test_overpayment_beyond_tolerance():
    assert run([obs("a", 1_000_001)]).state == policy.OVERPAID
    assert run([obs("a", 1_010_000)], overpayment_tolerance_bps=100).state == policy.PAID
    verdict = run([obs("a", 1_500_000)])
    assert verdict.amount_confirmed == 1_500_000


def test_second_full_payment_is_a_duplicate_and_not_counted():
    verdict = run([obs("a", height=99), obs("b", height=100)])
    assert verdict.state == policy.PAID
    assert verdict.amount_seen == 1_000_000
    assert verdict.classifications[("ethereum", "b", 0)] == policy.DUPLICATE
    assert verdict.flags == ("duplicate_payment",)


def test_ordering_confirmed_before_unconfirmed_by_height_and_position():
    # b is earlier in the chain than a although a was seen first in the mempool
    a = obs("a", height=101, position_in_block=0, seen_unconfirmed_at=T0)
    b = obs("b", height=100, position_in_block=5)
    verdict = run([a, b], tip=110)
    assert verdict.classifications[("ethereum", "b", 0)] == policy.COUNTED
    assert verdict.classifications[("ethereum", "a", 0)] == policy.DUPLICATE
    c = obs("c", height=100, position_in_block=1)
    assert run([b, c], tip=110).classifications[("ethereum", "c", 0)] == policy.COUNTED


def test_outputs_of_one_transaction_count_together():
    verdict = run([obs("a", 500_000, index=0), obs("a", 500_000, index=1)])
    assert verdict.state == policy.PAID and verdict.amount_seen == 1_000_000


def test_late_payment_never_moves_state_and_is_flagged():
    late = obs("a", block_time=EXPIRES + timedelta(minutes=1))
    verdict = run([late], now=EXPIRES + timedelta(minutes=30))
    assert verdict.state == policy.EXPIRED
    assert verdict.classifications[late.key] == policy.LATE
    assert verdict.flags == ("late_payment",)
    accepted = run(
        [late],
        now=EXPIRES + timedelta(minutes=30),
        resolutions=[ResolutionFacts(1, policy.ACCEPT_LATE_PAYMENT, late.key)],
    )
    assert accepted.state == policy.PAID


def test_first_seen_is_the_earlier_of_mempool_and_block_time():
    # mined after expiry, but seen in the mempool before it: on time
    on_time = obs(
        "a", block_time=EXPIRES + timedelta(minutes=5), seen_unconfirmed_at=EXPIRES - timedelta(minutes=1)
    )
    assert run([on_time], now=EXPIRES + timedelta(hours=1)).state == policy.PAID
    # a scanner that was down: recorded late, but the block time is before expiry: on time
    from_block = obs("b", block_time=EXPIRES - timedelta(seconds=1))
    assert run([from_block], now=EXPIRES + timedelta(hours=2)).state == policy.PAID


def test_after_monitoring_window_is_classified_apart():
    very_late = obs("a", block_time=EXPIRES + timedelta(hours=25))
    verdict = run([very_late], now=EXPIRES + timedelta(hours=26))
    assert verdict.classifications[very_late.key] == policy.AFTER_MONITORING_WINDOW
    assert verdict.state == policy.EXPIRED


def test_wrong_asset_and_wrong_network_are_never_counted():
    wrong_token = obs("a", token_contract="0xdac17f958d2ee523a2206206994597c13d831ec7")
    wrong_net = obs("b", network="polygon")
    verdict = run([wrong_token, wrong_net])
    assert verdict.state == policy.AWAITING_PAYMENT
    assert verdict.flags == ("wrong_asset", "wrong_network")
    assert run([wrong_token, wrong_net], now=EXPIRES).state == policy.FAILED


TREASURY = "0x000000000000000000000000000000000000beef"


def test_native_coin_from_the_treasury_to_a_token_payment_is_gas_funding():
    funding = obs("g", 10**16, token_contract="", sender=TREASURY)
    verdict = run([funding], gas_funders=frozenset({TREASURY}))
    assert verdict.classifications[funding.key] == policy.GAS_FUNDING
    assert (verdict.state, verdict.flags, verdict.amount_seen) == (policy.AWAITING_PAYMENT, (), 0)
    # Not a payment, not a wrong asset: the window closes on an unpaid intent, never a failed one.
    assert run([funding], now=EXPIRES, gas_funders=frozenset({TREASURY})).state == policy.EXPIRED
    paid = run([funding, obs("p")], gas_funders=frozenset({TREASURY}))
    assert (paid.state, paid.flags, paid.amount_seen) == (policy.PAID, (), 1_000_000)


def test_gas_funding_needs_the_treasury_the_native_coin_and_a_token_payment():
    other_sender = obs("g", 10**16, token_contract="", sender="0x" + "12" * 20)
    assert run([other_sender], gas_funders=frozenset({TREASURY})).flags == ("wrong_asset",)
    # A token other than the intent's, even from the treasury, is a wrong asset.
    other_token = obs("t", token_contract="0xdac17f958d2ee523a2206206994597c13d831ec7", sender=TREASURY)
    assert run([other_token], gas_funders=frozenset({TREASURY})).flags == ("wrong_asset",)
    # The native coin to a native-coin payment from the treasury is a payment like any other.
    native = obs("n", 1_000_000, token_contract="", sender=TREASURY)
    verdict = run([native], token_contract="", gas_funders=frozenset({TREASURY}))
    assert (verdict.state, verdict.classifications[native.key]) == (policy.PAID, policy.COUNTED)
    # Without a declared treasury, nothing is gas funding.
    assert run([obs("g", 10**16, token_contract="", sender=TREASURY)]).flags == ("wrong_asset",)


def test_reorg_non_canonical_goes_back():
    paid = obs("a")
    assert run([paid]).state == policy.PAID
    assert run([dataclasses.replace(paid, canonical=False)]).state == policy.AWAITING_PAYMENT


def test_cancel_closes_the_window_early():
    now = T0 + timedelta(minutes=2)
    assert run([], now=now, canceled_at=T0 + timedelta(minutes=1)).state == policy.EXPIRED


def test_resolutions_mark_paid_accept_underpayment_refund():
    under = [obs("a", 500_000)]
    assert run(under, resolutions=[ResolutionFacts(1, policy.ACCEPT_UNDERPAYMENT)]).state == policy.PAID
    assert run([], resolutions=[ResolutionFacts(2, policy.MARK_PAID)]).state == policy.PAID
    assert run(under, resolutions=[ResolutionFacts(3, policy.REFUND_RECORDED)]).state == policy.REFUNDED


def test_top_up_extension_counts_funds_seen_before_the_new_deadline():
    first = obs("a", 600_000)
    top_up = obs("b", 400_000, height=101, block_time=EXPIRES + timedelta(minutes=10))
    after = EXPIRES + timedelta(minutes=30)
    # without an extension the top-up is late and the payment stays underpaid
    verdict = run([first, top_up], now=after, tip=110)
    assert (verdict.state, verdict.classifications[top_up.key]) == (policy.UNDERPAID, policy.LATE)
    extended = [ResolutionFacts(1, policy.EXTEND_DEADLINE, until=EXPIRES + timedelta(hours=1))]
    verdict = run([first, top_up], now=after, tip=110, resolutions=extended)
    assert verdict.state == policy.PAID and verdict.amount_confirmed == 1_000_000
    # funds after the new deadline are late again
    too_late = [ResolutionFacts(1, policy.EXTEND_DEADLINE, until=EXPIRES + timedelta(minutes=5))]
    verdict = run([first, top_up], now=after, tip=110, resolutions=too_late)
    assert (verdict.state, verdict.classifications[top_up.key]) == (policy.UNDERPAID, policy.LATE)


def test_cancel_resolution_closes_the_window_and_wins_over_an_extension():
    canceled = [ResolutionFacts(1, policy.CANCEL, until=T0 + timedelta(minutes=1))]
    assert run([], now=T0 + timedelta(minutes=2), resolutions=canceled).state == policy.EXPIRED
    # funds first seen after the cancel are late (seen at T0+1min: not before the cancel)
    verdict = run([obs("a")], now=T0 + timedelta(minutes=2), resolutions=canceled)
    assert verdict.state == policy.EXPIRED and verdict.flags == ("late_payment",)
    both = [*canceled, ResolutionFacts(2, policy.EXTEND_DEADLINE, until=EXPIRES + timedelta(hours=1))]
    assert run([], now=T0 + timedelta(minutes=2), resolutions=both).state == policy.EXPIRED
    # an intent whose asset was never chosen is canceled too
    facts = intent(network=None, amount_due=None)
    assert evaluate(facts, [], canceled, {}, T0 + timedelta(minutes=2)).state == policy.EXPIRED


def test_tiered_confirmations():
    rules = [(0, 2), (10_000_000, 6), (1_000_000_000, 12)]
    assert policy.required_confirmations_for(5, rules, 1) == 2
    assert policy.required_confirmations_for(10_000_000, rules, 1) == 6
    assert policy.required_confirmations_for(2_000_000_000, rules, 1) == 12
    assert policy.required_confirmations_for(5, [(100, 6)], 3) == 3


# --- properties ---------------------------------------------------------------------------------------

TXS = [f"tx{i}" for i in range(6)]


@st.composite
def observation_sets(draw):
    """A handful of observations to one address: valid, partial, unconfirmed, late, wrong asset/network."""
    result = []
    for tx in draw(st.lists(st.sampled_from(TXS), min_size=0, max_size=5, unique=True)):
        height = draw(st.one_of(st.none(), st.integers(95, 110)))
        minutes = draw(st.integers(-10, 60 * 30))
        seen = T0 + timedelta(minutes=minutes)
        for index in range(draw(st.integers(1, 2))):
            result.append(
                ObservationFacts(
                    network=draw(st.sampled_from(["ethereum", "ethereum", "ethereum", "polygon"])),
                    tx_hash=tx,
                    output_index=index,
                    token_contract=draw(st.sampled_from([USDC, USDC, USDC, "0xother"])),
                    amount=draw(st.integers(1, 1_500_000)),
                    block_height=height,
                    block_hash=f"h{height}" if height is not None else "",
                    position_in_block=draw(st.integers(0, 3)) if height is not None else None,
                    block_time=seen if height is not None else None,
                    seen_unconfirmed_at=seen if height is None or draw(st.booleans()) else None,
                    canonical=draw(st.booleans()) if draw(st.booleans()) else True,
                )
            )
    return result


facts_strategy = st.builds(
    intent,
    amount_due=st.integers(1, 2_000_000),
    required_confirmations=st.integers(1, 6),
    underpayment_tolerance_bps=st.sampled_from([0, 100, 500]),
    overpayment_tolerance_bps=st.sampled_from([0, 100]),
)
now_strategy = st.integers(0, 60 * 48).map(lambda m: T0 + timedelta(minutes=m))


@settings(max_examples=300, deadline=None)
@given(
    facts_strategy, observation_sets(), st.integers(95, 115), now_strategy, st.randoms(use_true_random=False)
)
def test_same_verdict_for_any_order_and_duplication(facts, observations, tip, now, rnd):
    expected = evaluate(facts, observations, [], {"ethereum": tip}, now)
    shuffled = list(observations) + [rnd.choice(observations) for _ in range(3)] if observations else []
    rnd.shuffle(shuffled)
    assert evaluate(facts, shuffled, [], {"ethereum": tip}, now) == expected


@settings(max_examples=300, deadline=None)
@given(facts_strategy, observation_sets(), st.integers(95, 115), now_strategy, st.data())
def test_flipping_non_canonical_and_back_restores_the_verdict(facts, observations, tip, now, data):
    expected = evaluate(facts, observations, [], {"ethereum": tip}, now)
    if not observations:
        return
    chosen = data.draw(st.sets(st.sampled_from([o.key for o in observations]), min_size=1))
    flipped = [dataclasses.replace(o, canonical=False) if o.key in chosen else o for o in observations]
    during = evaluate(facts, flipped, [], {"ethereum": tip}, now)
    assert all(during.classifications[k] == policy.NOT_CANONICAL for k in chosen)
    # what was dropped is not counted while it is out
    assert during.amount_seen <= sum(o.amount for o in flipped if o.canonical)
    restored = [
        dataclasses.replace(o, canonical=original.canonical) if o.key in chosen else o
        for o, original in zip(flipped, observations, strict=True)
    ]
    assert evaluate(facts, restored, [], {"ethereum": tip}, now) == expected


@settings(max_examples=300, deadline=None)
@given(facts_strategy, observation_sets(), st.integers(95, 115), now_strategy)
def test_verdict_invariants(facts, observations, tip, now):
    verdict = evaluate(facts, observations, [], {"ethereum": tip}, now)
    assert 0 <= verdict.amount_confirmed <= verdict.amount_seen
    counted = [o for o in observations if verdict.classifications.get(o.key) == policy.COUNTED]
    assert verdict.amount_seen == sum({o.key: o.amount for o in counted}.values())
    # only valid, canonical, on-time funds of the right asset and network ever count
    for o in counted:
        assert o.canonical and o.network == "ethereum" and o.token_contract == USDC
        assert o.first_seen_at < facts.expires_at
    if verdict.state == policy.PAID:
        assert (
            verdict.amount_confirmed
            >= facts.amount_due - facts.amount_due * facts.underpayment_tolerance_bps // 10_000
        )
    if verdict.state in (policy.AWAITING_PAYMENT, policy.EXPIRED, policy.FAILED):
        assert verdict.amount_seen == 0


@settings(max_examples=200, deadline=None)
@given(facts_strategy, observation_sets(), st.integers(95, 115), now_strategy, st.integers(0, 60 * 48))
def test_window_resolutions_that_do_not_move_the_deadline_change_nothing(facts, observations, tip, now, m):
    """An extension to before the deadline, or a cancel after it, is the same evidence as none (apart from
    the fingerprint, which names every resolution); any other moves every classification consistently."""
    plain = evaluate(facts, observations, [], {"ethereum": tip}, now)
    moment = T0 + timedelta(minutes=m)
    kind = policy.EXTEND_DEADLINE if moment <= facts.expires_at else policy.CANCEL
    moved = evaluate(facts, observations, [ResolutionFacts(1, kind, until=moment)], {"ethereum": tip}, now)
    assert dataclasses.replace(moved, fingerprint="") == dataclasses.replace(plain, fingerprint="")
    other = policy.CANCEL if kind == policy.EXTEND_DEADLINE else policy.EXTEND_DEADLINE
    resolutions = [ResolutionFacts(1, other, until=moment)]
    verdict = evaluate(facts, observations, resolutions, {"ethereum": tip}, now)
    deadline = policy.effective_deadline(facts, resolutions)
    assert deadline == moment
    for o in observations:
        if verdict.classifications.get(o.key) == policy.COUNTED:
            assert o.first_seen_at < deadline

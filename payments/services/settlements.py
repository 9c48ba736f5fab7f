"""Settlements derived from outflow evidence: for each outflow transaction and each merchant whose addresses
it spent from, where the money went, which payments' funds it moved (legs) and what share of the network
fee each bears. Re-derived whenever the transaction's evidence changes (recorded, mined, reorged out,
back); the same evidence always gives the same settlement, so `verify_payments` can re-derive and compare.

Events, per payment whose funds the settlement moved (with the settlement beside the payment's
snapshot): `settlement.created`, `settlement.unexpected_outflow` (money went somewhere the merchant never
declared: a support case), `settlement.reorged` (its transaction left the best chain or the mempool) and
`settlement.restored` (it came back)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from django.db import transaction
from django.db.models import Q

from .. import pricing
from ..models import (
    ChainObservation,
    Network,
    NetworkAsset,
    OutflowTransaction,
    PaymentAddress,
    PaymentIntent,
    Refund,
    Settlement,
    SettlementLeg,
    TreasuryAddress,
    Wallet,
)
from ..selectors import INTENT_RELATED, intents_transactions
from ..selectors_settlements import settlement_representation
from ..wallets import derive_bech32_address, parse_account_key
from .events import events_write
from .reference import default_rate_source

logger = logging.getLogger(__name__)

# How far along a Bitcoin-family wallet's change chain (m/.../1/i) a destination is looked for: wallets
# use change addresses in order, so the gap beyond the payment addresses in use is the margin.
CHANGE_GAP = 100

Kind = Settlement.Kind
# A destination's classification, from the merchant's point of view.
SWEEP, CONSOLIDATION, REFUND, UNKNOWN, DATA = "sweep", "consolidation", "refund", "unknown", "data"


@dataclass
class _Leg:
    merchant_id: str
    intent_id: str | None
    network_asset_id: int | None
    token_contract: str
    amount: int = 0
    fee: int | None = None


@dataclass
class _Derived:
    kind: str
    destinations: list[dict]
    legs: list[_Leg] = field(default_factory=list)
    fee: int | None = None


def settlements_derive(*, transaction_ids: Iterable[int], now: datetime) -> list[Settlement]:
    """Bring the settlements of these outflow transactions in line with their evidence (idempotent),
    writing the events a change calls for. Returns the settlements that changed."""
    changed: list[Settlement] = []
    rates: dict[tuple[str, str], pricing.Rate | None] = {}  # one lookup per pair and call
    for tx_id in sorted(set(transaction_ids)):  # a fixed order: two derivations never deadlock
        changed += _derive_one(tx_id, now, rates)
    return changed


def _derive_one(tx_id: int, now: datetime, rates: dict) -> list[Settlement]:
    with transaction.atomic():
        tx = OutflowTransaction.objects.select_for_update().select_related("network").get(pk=tx_id)
        derived = derive(tx)
        existing = {s.merchant_id: s for s in Settlement.objects.select_for_update().filter(transaction=tx)}
        # A payment address credited by this same transaction was credited by the merchant's own money
        # (a consolidation): re-settle those payments now that the outflow is known.
        from .evidence import payment_settle

        credited = ChainObservation.objects.filter(
            network=tx.network, tx_hash=tx.tx_hash, intent__isnull=False
        )
        for intent_id in sorted(set(credited.values_list("intent_id", flat=True))):
            payment_settle(intent_id=intent_id, now=now)
        changed = []
        for merchant_id, result in sorted(derived.items()):
            settlement = existing.get(merchant_id)
            events = _apply(tx, merchant_id, result, settlement, now, rates)
            if events is not None:
                settlement, types = events
                changed.append(settlement)
                _events_write(settlement, types)
    return changed


def derive(tx: OutflowTransaction) -> dict[str, _Derived]:
    """The settlement of each merchant in one outflow transaction, from the evidence alone (pure but for
    reading the database): legs per payment and asset in input/log order, the fee pro rata to the amounts
    moved (equal shares when the legs are of different assets; the remainder to the first leg), and each
    destination classified."""
    network = tx.network
    outflows = list(tx.outflows.order_by("index"))
    owners = dict(
        PaymentAddress.objects.filter(address__in={o.address for o in outflows}).values_list(
            "address", "wallet__merchant_id"
        )
    )
    legs: dict[tuple, _Leg] = {}
    merchants: list[str] = []
    for outflow in outflows:
        merchant_id = owners.get(outflow.address)
        if merchant_id is None:
            continue
        if merchant_id not in merchants:
            merchants.append(merchant_id)
        if outflow.amount_base_units <= 0:
            continue  # the EVM transaction row of a token sweep: its gas is the fee, not a leg
        key = (merchant_id, outflow.intent_id, outflow.network_asset_id, outflow.token_contract)
        leg = legs.setdefault(
            key, _Leg(merchant_id, outflow.intent_id, outflow.network_asset_id, outflow.token_contract)
        )
        leg.amount += int(outflow.amount_base_units)
    ordered = list(legs.values())
    fee = int(tx.fee_base_units) if tx.fee_base_units is not None else None
    _attribute_fee(ordered, fee)
    result: dict[str, _Derived] = {}
    for merchant_id in merchants:
        seen_at = min(t for t in (tx.seen_unconfirmed_at, tx.block_time) if t is not None)
        destinations = _classify(network, merchant_id, tx, seen_at)
        own = [leg for leg in ordered if leg.merchant_id == merchant_id]
        kinds = {d["kind"] for d in destinations}
        if UNKNOWN in kinds:
            kind = Kind.UNKNOWN_OUTFLOW
        elif REFUND in kinds:
            kind = Kind.REFUND
        elif SWEEP in kinds:
            kind = Kind.SWEEP
        elif CONSOLIDATION in kinds:
            kind = Kind.CONSOLIDATION
        else:
            kind = Kind.FEE_ONLY
        if fee is None:
            share = None
        elif ordered:
            share = sum(leg.fee or 0 for leg in own)
        else:  # nothing moved: the fee is the first merchant's (there is only ever one in practice)
            share = fee if merchant_id == merchants[0] else 0
        result[merchant_id] = _Derived(kind=kind, destinations=destinations, legs=own, fee=share)
    return result


def _attribute_fee(legs: list[_Leg], fee: int | None) -> None:
    """Pro rata in base units, rounded down; the remainder to the first leg (deterministic)."""
    if fee is None or not legs:
        return
    one_asset = len({(leg.network_asset_id, leg.token_contract) for leg in legs}) == 1
    weights = [leg.amount if one_asset else 1 for leg in legs]
    total = sum(weights)
    for leg, weight in zip(legs, weights, strict=True):
        leg.fee = fee * weight // total
    legs[0].fee += fee - sum(leg.fee for leg in legs)


def _classify(network: Network, merchant_id: str, tx: OutflowTransaction, seen_at: datetime) -> list[dict]:
    # A treasury counts for outflows seen while it was declared and not retired (retiring one means money
    # sent there from then on is unknown again).
    treasuries = set(
        TreasuryAddress.objects.filter(merchant_id=merchant_id, network=network)
        .filter(Q(retired_at__isnull=True) | Q(retired_at__gt=seen_at))
        .values_list("address", flat=True)
    )
    destinations: list[dict] = tx.destinations
    addresses = [d["address"] for d in destinations if d.get("address")]
    own = set(
        PaymentAddress.objects.filter(address__in=addresses, wallet__merchant_id=merchant_id).values_list(
            "address", flat=True
        )
    )
    # A refund is what the refund's own evidence says paid it: the transfer (this transaction's output or
    # log) its `refund_settle` linked. Not "an open refund of this amount to this address": that would
    # depend on the refund's state when this ran, and a refund failing, or paid by another transfer, would
    # leave the settlement saying otherwise. `refund_settle` re-derives this settlement when the link moves.
    refunded = set(
        Refund.objects.filter(
            merchant_id=merchant_id, observation__network=network, observation__tx_hash=tx.tx_hash
        ).values_list("observation__output_index", flat=True)
    )
    classified = []
    for d in destinations:
        address = d.get("address") or ""
        if network.chain == "evm":
            address = address.lower()
        if not address and int(d.get("amount") or 0) == 0:
            kind = DATA  # OP_RETURN and the like: nothing to anyone
        elif address in treasuries:
            kind = SWEEP
        elif address in own or _is_change(network, merchant_id, address):
            kind = CONSOLIDATION
        elif d.get("index") in refunded:
            kind = REFUND  # the transfer that paid one of the merchant's refunds
        else:
            kind = UNKNOWN
        classified.append({**d, "kind": kind})
    return classified


def _is_change(network: Network, merchant_id: str, address: str) -> bool:
    """Whether `address` is on the change chain of the merchant's wallet for this Bitcoin-family network."""
    if network.chain == "evm" or not address:
        return False
    wallets = Wallet.objects.filter(merchant_id=merchant_id, network=network).values_list(
        "account_key", "next_index"
    )
    return any(
        address in _change_addresses(key, network.bech32_hrp, next_index + CHANGE_GAP)
        for key, next_index in wallets
    )


@lru_cache(maxsize=64)
def _change_addresses(account_key: str, hrp: str, count: int) -> frozenset[str]:
    key = parse_account_key(account_key)
    return frozenset(derive_bech32_address(key, i, hrp, change=1) for i in range(count))


def _apply(
    tx: OutflowTransaction,
    merchant_id: str,
    result: _Derived,
    settlement: Settlement | None,
    now: datetime,
    rates: dict,
) -> tuple[Settlement, list[str]] | None:
    """Store what `derive` found; the events due, or None if nothing changed."""
    seen_at = min(t for t in (tx.seen_unconfirmed_at, tx.block_time) if t is not None)
    fee_asset = NetworkAsset.objects.filter(network=tx.network, contract_address="").first()
    types: list[str] = []
    if settlement is None:
        settlement = Settlement(
            transaction=tx,
            merchant_id=merchant_id,
            network=tx.network,
            canonical=tx.canonical,
            created_at=now,
        )
        if tx.canonical:
            types.append("settlement.created")
    elif settlement.canonical != tx.canonical:
        settlement.canonical = tx.canonical
        settlement.revision += 1
        types.append("settlement.restored" if tx.canonical else "settlement.reorged")
    if (
        settlement.canonical
        and result.kind == Kind.UNKNOWN_OUTFLOW
        and settlement.kind != Kind.UNKNOWN_OUTFLOW
    ):
        if not types and not settlement._state.adding:
            settlement.revision += 1  # unknown again after being classified: a new event, its own key
        types.append("settlement.unexpected_outflow")
    fields = (result.kind, result.destinations, result.fee, fee_asset.pk if fee_asset else None, seen_at)
    stored = (
        settlement.kind,
        settlement.destinations,
        int(settlement.fee_base_units) if settlement.fee_base_units is not None else None,
        settlement.fee_asset_id,
        settlement.seen_at,
    )
    legs_changed = settlement._state.adding or _legs_key(settlement) != [_leg_key(leg) for leg in result.legs]
    if not types and fields == stored and not legs_changed:
        return None
    settlement.kind, settlement.destinations, settlement.fee_base_units, settlement.fee_asset_id = fields[:4]
    settlement.seen_at = seen_at
    settlement.updated_at = now
    settlement.save()
    if legs_changed:
        _legs_store(settlement, result.legs, now, rates)
    return settlement, types


def _leg_key(leg: _Leg) -> tuple:
    return (leg.intent_id, leg.network_asset_id, leg.token_contract, leg.amount, leg.fee)


def _legs_key(settlement: Settlement) -> list[tuple]:
    return [
        (
            leg.intent_id,
            leg.network_asset_id,
            leg.token_contract,
            int(leg.amount_base_units),
            int(leg.fee_base_units) if leg.fee_base_units is not None else None,
        )
        for leg in settlement.legs.order_by("position")
    ]


def _legs_store(settlement: Settlement, legs: list[_Leg], now: datetime, rates: dict) -> None:
    """Replace the legs, keeping the fiat value a leg already had (the rate when it was first seen)."""
    previous = {
        (leg.intent_id, leg.network_asset_id, int(leg.amount_base_units)): leg
        for leg in settlement.legs.all()
    }
    settlement.legs.all().delete()
    rows = []
    for position, leg in enumerate(legs):
        row = SettlementLeg(
            settlement=settlement,
            position=position,
            intent_id=leg.intent_id,
            network_asset_id=leg.network_asset_id,
            token_contract=leg.token_contract,
            amount_base_units=leg.amount,
            fee_base_units=leg.fee,
        )
        before = previous.get((leg.intent_id, leg.network_asset_id, leg.amount))
        if before is not None and before.rate is not None:
            row.fiat_currency, row.fiat_value = before.fiat_currency, before.fiat_value
            row.rate, row.rate_source, row.rate_time = before.rate, before.rate_source, before.rate_time
        else:
            _fiat_value(row, now, rates)
        rows.append(row)
    SettlementLeg.objects.bulk_create(rows)


def _fiat_value(leg: SettlementLeg, now: datetime, rates: dict) -> None:
    """The leg's value in its payment's fiat currency (USD for a payment priced in crypto) at the rate
    when the settlement was seen; left empty if no rate is available (finance sees the gap)."""
    if leg.network_asset_id is None:
        return
    na = NetworkAsset.objects.select_related("asset").get(pk=leg.network_asset_id)
    intent = PaymentIntent.objects.filter(pk=leg.intent_id).only("price_currency").first()
    currency = intent.price_currency if intent and intent.price_currency in pricing.FIAT_CURRENCIES else "USD"
    pair = (na.asset.code, currency)
    if pair not in rates:
        try:
            rates[pair] = default_rate_source().rate(asset=na.asset.code, currency=currency, now=now)
        except Exception as exc:  # a rate source down must not stop a scan: the value stays empty
            logger.warning("no %s/%s rate for a settlement: %s", na.asset.code, currency, exc)
            rates[pair] = None
    rate = rates[pair]
    if rate is None:
        return
    amount = pricing.from_base_units(int(leg.amount_base_units), na.decimals)
    leg.fiat_currency = currency
    cents = Decimal(1).scaleb(-pricing.FIAT_CURRENCIES[currency])
    leg.fiat_value = (amount * rate.rate).quantize(cents, rounding=ROUND_HALF_UP)
    leg.rate, leg.rate_source, leg.rate_time = rate.rate, rate.source, rate.time


def _events_write(settlement: Settlement, types: list[str]) -> None:
    """Each event once per payment whose funds the settlement moved, beside the payment's snapshot."""
    if not types:
        return
    intent_ids = sorted({i for i in settlement.legs.values_list("intent_id", flat=True) if i})
    details = {"settlement": settlement_representation(settlement)}
    for intent_id in intent_ids:
        intent = (
            PaymentIntent.objects.select_for_update(of=("self",))
            .select_related(*INTENT_RELATED)
            .get(pk=intent_id)
        )
        events = [(t, f"{t}:{settlement.pk}:{settlement.revision}", None) for t in types]
        events_write(
            intent=intent,
            events=events,
            transactions=intents_transactions([intent])[intent.pk],
            details=details,
        )


def settlement_differences(tx: OutflowTransaction) -> list[str]:
    """How the stored settlements of one outflow transaction differ from what its evidence derives
    (read-only; empty when they agree): `verify_payments` reports these."""
    derived = derive(tx)
    stored = {s.merchant_id: s for s in Settlement.objects.filter(transaction=tx).prefetch_related("legs")}
    found = []
    for merchant_id in sorted(set(derived) | set(stored)):
        result, settlement = derived.get(merchant_id), stored.get(merchant_id)
        where = f"settlement of {tx.network_id}:{tx.tx_hash} for {merchant_id}"
        if settlement is None or result is None:
            found.append(f"{where}: {'missing' if settlement is None else 'not derived from the evidence'}")
            continue
        expected = (
            result.kind,
            tx.canonical,
            result.fee,
            [{k: d[k] for k in ("index", "address", "amount", "kind")} for d in result.destinations],
            [_leg_key(leg) for leg in result.legs],
        )
        actual = (
            settlement.kind,
            settlement.canonical,
            int(settlement.fee_base_units) if settlement.fee_base_units is not None else None,
            [{k: d.get(k) for k in ("index", "address", "amount", "kind")} for d in settlement.destinations],
            _legs_key(settlement),
        )
        names = ("kind", "canonical", "fee", "destinations", "legs")
        for name, want, have in zip(names, expected, actual, strict=True):
            if want != have:
                found.append(f"{where} ({settlement.pk}): {name} stored {have!r}, evidence says {want!r}")
    return found

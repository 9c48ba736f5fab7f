"""The daily close: per merchant x asset x network and UTC day, what the stored evidence says the merchant's
payment addresses held and moved (opening + received - swept - refunded - other outflows - fees =
closing), then what the chain itself says they hold now, beside what the evidence says they hold at that
same height. The day's figures are the evidence's; the check is the chain's (`ChainBackend.balances`:
`eth_getBalance` / `balanceOf`, the node's UTXO set or Esplora's), never the gateway's own arithmetic.

Amounts are base units. For a Bitcoin-family coin an outflow's value is the outputs it spent, fee
included: the fee is split out by the settlement legs' shares. For an EVM chain, gas is paid in the native
coin by the address that sent the transaction: counted as the native asset's fees when a payment address
paid it. A difference (an outflow the scanners never saw, a credit they missed, a row altered) is stored
per address, told to the payments whose addresses differ (`payment.close_difference`) and, from that
event, opens one support case per close."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Q, Sum

from payments.chains.base import ChainBackend
from payments.models import (
    ChainObservation,
    Network,
    NetworkAsset,
    Outflow,
    OutflowTransaction,
    PaymentAddress,
    PaymentIntent,
    SettlementLeg,
)
from payments.selectors import INTENT_RELATED, intents_transactions
from payments.services.events import events_write

from .models import DailyClose

logger = logging.getLogger(__name__)

EVENT = "payment.close_difference"
SWEPT_KINDS = ("sweep", "consolidation")


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _addresses(merchant_id: str, network: Network) -> list[str]:
    """The merchant's payment addresses given out for this network: those of its payments on it, and any
    of its addresses the chain has credited there (an EVM wallet's addresses exist on every EVM network)."""
    wallets = Q(wallet__merchant_id=merchant_id) & (
        Q(wallet__network__isnull=True, wallet__chain="evm")
        if network.chain == "evm"
        else Q(wallet__network=network)
    )
    used = Q(intent__network_asset__network=network) | Q(
        address__in=ChainObservation.objects.filter(network=network).values("address")
    )
    return sorted(PaymentAddress.objects.filter(wallets, used).distinct().values_list("address", flat=True))


def _by_address(rows, key: str, value: str) -> dict[str, int]:
    return {r[key]: int(r["total"] or 0) for r in rows.values(key).annotate(total=Sum(value))}


def evidence_balances(
    na: NetworkAsset, addresses: list[str], *, height: int | None = None, before: datetime | None = None
) -> dict[str, int]:
    """What the stored evidence says each address holds of the asset: canonical credits in blocks, minus
    what canonical outflows in blocks spent, minus (native coin of an EVM chain) the gas the address paid;
    up to `height` or to blocks before `before`."""
    network = na.network
    token = na.contract_address.lower()
    within = Q()
    if height is not None:
        within &= Q(block_height__lte=height)
    if before is not None:
        within &= Q(block_time__lt=before)
    credits = ChainObservation.objects.filter(
        within,
        network=network,
        canonical=True,
        block_height__isnull=False,
        token_contract=token,
        address__in=addresses,
    )
    tx_within = Q(transaction__canonical=True, transaction__block_height__isnull=False)
    if height is not None:
        tx_within &= Q(transaction__block_height__lte=height)
    if before is not None:
        tx_within &= Q(transaction__block_time__lt=before)
    debits = Outflow.objects.filter(tx_within, network=network, token_contract=token, address__in=addresses)
    held: dict[str, int] = defaultdict(int)
    for address, total in _by_address(credits, "address", "amount_base_units").items():
        held[address] += total
    for address, total in _by_address(debits, "address", "amount_base_units").items():
        held[address] -= total
    if network.chain == "evm" and not token:
        gas = OutflowTransaction.objects.filter(
            within, network=network, canonical=True, block_height__isnull=False, fee_payer__in=addresses
        )
        for address, total in _by_address(gas, "fee_payer", "fee_base_units").items():
            held[address] -= total
    return dict(held)


def _day_figures(merchant_id: str, na: NetworkAsset, addresses: list[str], day: date) -> dict[str, int]:
    start, end = _bounds(day)
    network = na.network
    token = na.contract_address.lower()
    received = ChainObservation.objects.filter(
        network=network,
        canonical=True,
        block_time__gte=start,
        block_time__lt=end,
        block_height__isnull=False,
        token_contract=token,
        address__in=addresses,
    ).aggregate(total=Sum("amount_base_units"))["total"]
    legs = SettlementLeg.objects.filter(
        settlement__merchant_id=merchant_id,
        settlement__canonical=True,
        settlement__transaction__block_height__isnull=False,
        settlement__transaction__block_time__gte=start,
        settlement__transaction__block_time__lt=end,
        network_asset=na,
    ).values_list("settlement__kind", "amount_base_units", "fee_base_units")
    figures = {"received": int(received or 0), "swept": 0, "refunded": 0, "other_out": 0, "fees": 0}
    utxo = network.chain != "evm"
    for kind, amount, fee in legs:
        fee = int(fee or 0) if utxo else 0  # an EVM leg's fee is gas, in the native coin (below)
        bucket = "swept" if kind in SWEPT_KINDS else "refunded" if kind == "refund" else "other_out"
        figures[bucket] += int(amount) - fee
        figures["fees"] += fee
    if not utxo and not token:
        gas = OutflowTransaction.objects.filter(
            network=network,
            canonical=True,
            block_height__isnull=False,
            block_time__gte=start,
            block_time__lt=end,
            fee_payer__in=addresses,
        ).aggregate(total=Sum("fee_base_units"))["total"]
        figures["fees"] = int(gas or 0)
    return figures


def close_day(
    *,
    day: date,
    now: datetime,
    backend_for: Callable[[Network], ChainBackend],
    merchant_id: str | None = None,
) -> list[DailyClose]:
    """Close `day` for every merchant with payment addresses on an enabled asset's network (or one
    merchant). Idempotent: closing a day again updates its records (and tells only new differences)."""
    from payments.models import Merchant

    merchants = Merchant.objects.filter(pk=merchant_id) if merchant_id else Merchant.objects.all()
    closes = []
    for na in NetworkAsset.objects.filter(enabled=True, network__enabled=True).select_related(
        "network", "asset"
    ):
        for merchant in merchants.order_by("pk"):
            addresses = _addresses(merchant.pk, na.network)
            if addresses:
                closes.append(_close_one(merchant.pk, na, addresses, day, now, backend_for))
    return closes


def _close_one(merchant_id, na, addresses, day, now, backend_for) -> DailyClose:
    start, _ = _bounds(day)
    opening = sum(evidence_balances(na, addresses, before=start).values())
    figures = _day_figures(merchant_id, na, addresses, day)
    closing = opening + figures["received"] - figures["swept"] - figures["refunded"] - figures["other_out"]
    closing -= figures["fees"]
    values = {
        "opening": opening,
        **figures,
        "closing": closing,
        "addresses": len(addresses),
        "computed_at": now,
        "detail": "",
    }
    try:
        height, chain = backend_for(na.network).balances(addresses, na.contract_address)
    except Exception as exc:  # a node down: the day's figures stand, the check waits for the next run
        logger.warning("close of %s %s on %s: the chain could not be asked: %s", merchant_id, na, day, exc)
        values.update(status=DailyClose.Status.UNCHECKED, detail=str(exc)[:300], check_height=None)
        values.update(evidence_balance=None, chain_balance=None, difference=None, differences=[])
        return _store(merchant_id, na, day, values, [])
    evidence = evidence_balances(na, addresses, height=height)
    differing = [
        {"address": a, "evidence": str(evidence.get(a, 0)), "chain": str(chain.get(a, 0))}
        for a in addresses
        if evidence.get(a, 0) != chain.get(a, 0)
    ]
    values.update(
        check_height=height,
        evidence_balance=sum(evidence.values()),
        chain_balance=sum(chain.values()),
        difference=sum(chain.values()) - sum(evidence.values()),
        differences=differing,
        status=DailyClose.Status.DIFFERENCE if differing else DailyClose.Status.BALANCED,
    )
    return _store(merchant_id, na, day, values, differing)


def _store(merchant_id, na, day, values, differing) -> DailyClose:
    with transaction.atomic():
        record = (
            DailyClose.objects.select_for_update()
            .filter(merchant_id=merchant_id, network_asset=na, day=day)
            .first()
        )
        told = {d["address"] for d in (record.differences if record else [])}
        if record is None:
            record = DailyClose(merchant_id=merchant_id, network_asset=na, day=day)
        for name, value in values.items():
            setattr(record, name, value)
        record.save()
        new = [d for d in differing if d["address"] not in told]
        _tell(record, new)
    return record


def _tell(record: DailyClose, differing: list[dict]) -> None:
    """`payment.close_difference` to each payment whose address differs (its latest payment)."""
    if not differing:
        return
    owners = dict(
        PaymentIntent.objects.filter(address__address__in=[d["address"] for d in differing])
        .order_by("address__address", "-created_at")
        .distinct("address__address")
        .values_list("address__address", "pk")
    )
    for d in differing:
        intent_id = owners.get(d["address"])
        if intent_id is None:
            continue
        intent = (
            PaymentIntent.objects.select_for_update(of=("self",))
            .select_related(*INTENT_RELATED)
            .get(pk=intent_id)
        )
        dedupe = f"close:{record.pk}:{d['address']}"[:100]
        if intent.events.filter(dedupe_key=dedupe).exists():
            continue
        events_write(
            intent=intent,
            events=[(EVENT, dedupe, None)],
            transactions=intents_transactions([intent])[intent.pk],
            details={
                "close": {
                    "id": record.pk,
                    "day": record.day.isoformat(),
                    "asset": record.network_asset.asset.code,
                    "network": record.network_asset.network.code,
                    "check_height": record.check_height,
                    "address": d["address"],
                    "evidence_balance": d["evidence"],
                    "chain_balance": d["chain"],
                }
            },
        )

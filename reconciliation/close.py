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
import time as time_module
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Q, Sum

from payments.chains.base import ChainBackend
from payments.chains.redaction import redact_text
from payments.models import (
    ChainObservation,
    Network,
    NetworkAsset,
    Outflow,
    OutflowTransaction,
    PaymentAddress,
    PaymentIntent,
    ScanCursor,
    SettlementLeg,
)
from payments.selectors import INTENT_RELATED, intents_transactions
from payments.services.events import events_write

from .models import DailyClose

logger = logging.getLogger(__name__)

EVENT = "payment.close_difference"
CATCH_UP_ATTEMPTS, CATCH_UP_WAIT_S = 5, 2.0
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
    merchant). Idempotent: closing a day again updates its records (and tells only new differences).
    One close failing (a node, a lock) never stops the others: it is logged and left for the next run."""
    from payments.models import Merchant

    merchants = Merchant.objects.filter(pk=merchant_id) if merchant_id else Merchant.objects.all()
    closes = []
    for na in NetworkAsset.objects.filter(enabled=True, network__enabled=True).select_related(
        "network", "asset"
    ):
        for merchant in merchants.order_by("pk"):
            addresses = _addresses(merchant.pk, na.network)
            if not addresses:
                continue
            try:
                closes.append(_close_one(merchant.pk, na, addresses, day, now, backend_for))
            except Exception:
                logger.exception(
                    "close of %s %s/%s on %s failed", merchant.pk, na.asset.code, na.network.code, day
                )
    return closes


def _chain_at_the_scanners_height(na: NetworkAsset, addresses: list[str], backend: ChainBackend):
    """The chain's balances at the height the scanner has recorded everything up to (the evidence's): EVM
    reads them at that block; a chain that answers only at its best block is asked until the scanner has
    caught up with it. (height, balances), or the reason it could not be done."""
    for attempt in range(CATCH_UP_ATTEMPTS):
        cursor = ScanCursor.objects.filter(network=na.network).values_list("height", flat=True).first()
        if cursor is None:
            return "the network has never been scanned"
        height, chain = backend.balances(addresses, na.contract_address, height=cursor)
        if height == cursor:
            return height, chain
        if attempt + 1 < CATCH_UP_ATTEMPTS:
            time_module.sleep(CATCH_UP_WAIT_S)
    return f"the node is at block {height}, the scanner at {cursor}: checked at the next run"


def _close_one(merchant_id, na, addresses, day, now, backend_for) -> DailyClose:
    start, end = _bounds(day)
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
    unchecked = {"evidence_balance": None, "chain_balance": None, "difference": None, "differences": []}
    try:
        answer = _chain_at_the_scanners_height(na, addresses, backend_for(na.network))
    except Exception as exc:  # a node down: the day's figures stand, the check waits for the next run
        answer = redact_text(str(exc), url=na.network.rpc_url)
        logger.warning("close of %s %s on %s: the chain could not be asked: %s", merchant_id, na, day, answer)
    if isinstance(answer, str):
        values.update(status=DailyClose.Status.UNCHECKED, detail=answer[:300], check_height=None, **unchecked)
        return _store(merchant_id, na, day, values, [])
    height, chain = answer
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
    # The day's figures must add up to what the evidence holds at the day's end: a settlement not derived
    # (a crash between a scan and its derivation) would leave an outflow out of them.
    held = sum(evidence_balances(na, addresses, before=end).values())
    if held != closing:
        values.update(
            status=DailyClose.Status.DIFFERENCE,
            detail=f"the day's figures close at {closing} but the evidence holds {held} at the day's end",
        )
    return _store(merchant_id, na, day, values, differing)


def _store(merchant_id, na, day, values, differing) -> DailyClose:
    with transaction.atomic():
        record, _ = DailyClose.objects.get_or_create(
            merchant_id=merchant_id, network_asset=na, day=day, defaults={**values, "differences": []}
        )
        record = DailyClose.objects.select_for_update().get(pk=record.pk)
        # A difference already told (by this close before, or the day before, unchanged) is not told again.
        previous = (
            DailyClose.objects.filter(merchant_id=merchant_id, network_asset=na, day__lt=day)
            .order_by("-day")
            .values_list("differences", flat=True)
            .first()
        )
        told = {(d["address"], d["evidence"], d["chain"]) for d in [*record.differences, *(previous or [])]}
        for name, value in values.items():
            setattr(record, name, value)
        record.save()
        new = [d for d in differing if (d["address"], d["evidence"], d["chain"]) not in told]
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
    for d in sorted(differing, key=lambda d: owners.get(d["address"], "")):  # payments locked in id order
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

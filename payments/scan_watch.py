"""What a network's scan looks for: the addresses payments may arrive at (and refunds' destinations), and
the outflows from the gateway's addresses (EVM: their senders; Bitcoin-family: the outputs they hold)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import DateTimeField, ExpressionWrapper, F, Q, Value

from .chains.base import SpendWatch
from .models import ChainObservation, Network, Outflow, PaymentAddress, PaymentState, Refund


def watched_addresses(*, network: Network, now: datetime) -> list[str]:
    """Addresses whose intents may still receive funds worth seeing: within their late-payment window,
    or waiting on confirmations. EVM: every EVM address (the same address on another network is how
    wrong-network funds are recognised); Bitcoin-family: the wallets of this network."""
    addresses = PaymentAddress.objects.filter(intent__isnull=False)
    if network.chain == "evm":
        addresses = addresses.filter(wallet__chain="evm")
    else:
        addresses = addresses.filter(wallet__network=network)
    monitored_until = ExpressionWrapper(
        F("intent__expires_at") + F("intent__late_payment_window_minutes") * Value(timedelta(minutes=1)),
        output_field=DateTimeField(),
    )
    waiting = Q(intent__state__in=[PaymentState.DETECTED, PaymentState.CONFIRMING])
    addresses = addresses.annotate(monitored_until=monitored_until)
    return list(addresses.filter(Q(monitored_until__gt=now) | waiting).values_list("address", flat=True))


def refund_destinations(*, network: Network, now: datetime) -> list[str]:
    """Refunds' destinations on this network: a payment to one is expected, or (confirmed within the last
    day) may still be reorged away. Watched for transfers in; never for outflows (they are customers')."""
    refunds = Refund.objects.filter(network_asset__network=network).filter(
        Q(state__in=[Refund.State.AWAITING_PAYMENT, Refund.State.DETECTED])
        | Q(state=Refund.State.CONFIRMED, updated_at__gt=now - timedelta(days=1))
    )
    return sorted(set(refunds.values_list("destination", flat=True)))


def spend_watch(*, network: Network, watched: list[str]) -> SpendWatch:
    """The outflows a scan of `network` looks for. Bitcoin-family: every output the gateway credited that
    no canonical outflow in a block spends yet (a spend seen in the mempool is found again in its block;
    an output spent by a transaction a reorg dropped is watched again).
    EVM: every payment address that received anything on this network, and the addresses being watched
    (funds may arrive and leave within one batch). A refund's destination is the customer's: not watched."""
    if network.chain == "evm":
        funded = ChainObservation.objects.filter(network=network, intent__isnull=False).values_list(
            "address", flat=True
        )
        return SpendWatch(senders=frozenset(funded.distinct()) | frozenset(a.lower() for a in watched))
    spent = Outflow.objects.filter(
        network=network,
        transaction__canonical=True,
        transaction__block_height__isnull=False,
        spent_observation__isnull=False,
    ).values("spent_observation_id")
    unspent = (
        ChainObservation.objects.filter(network=network, canonical=True, intent__isnull=False)
        .exclude(pk__in=spent)
        .values_list("tx_hash", "output_index", "address", "amount_base_units")
    )
    return SpendWatch(outpoints={(tx, n): (address, int(amount)) for tx, n, address, amount in unspent})

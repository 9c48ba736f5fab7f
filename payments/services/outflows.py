"""Outflows as evidence: money leaving a derived address, recorded as the chains showed it, with the same
guarantees as the observations of payments (unique per network, transaction and index; block fields
follow the chain; `canonical` turns false on a reorg or a dropped transaction and true when seen again)."""

from __future__ import annotations

import json
from datetime import datetime

from django.db import connection, transaction

from ..chains.base import Destination, Spend
from ..models import (
    ChainObservation,
    Network,
    NetworkAsset,
    Outflow,
    OutflowTransaction,
    PaymentAddress,
)
from .evidence import BLOCK_FIELDS_UPSERT
from .settlements import settlements_derive


def destination_json(destination: Destination) -> dict:
    return {
        "index": destination.index,
        "address": destination.address,
        "amount": str(destination.amount_base_units),
        "token_contract": destination.token_contract.lower(),
        "script": destination.script,
    }


def outflow_record(*, spend: Spend, now: datetime) -> Outflow | None:
    """Record value leaving a derived address and its transaction. Recording it again changes nothing
    but the transaction's block fields (now in a block, or back after a reorg: canonical again); a
    transaction seen through several of its outflows collects all their destinations. Returns None for
    an address the gateway never derived."""
    network = Network.objects.get(code=spend.network_code)
    evm = network.chain == "evm"
    address = spend.address.lower() if evm else spend.address
    owner = PaymentAddress.objects.filter(address=address).values_list("pk", "intent__pk").first()
    if owner is None:
        return None
    token = spend.token_contract.lower()
    network_asset = NetworkAsset.objects.filter(
        network=network, **({"contract_address__iexact": token} if token else {"contract_address": ""})
    ).first()
    if token and (network_asset is None or spend.amount_base_units == 0):
        # Anyone can emit a Transfer log naming any `from` (a contract of their own, or a zero-value
        # transferFrom on a real token: address poisoning). Only a known token's value leaving counts.
        return None
    fee = spend.fee_base_units
    if (
        evm
        and spend.fee_payer
        and not PaymentAddress.objects.filter(address=spend.fee_payer.lower()).exists()
    ):
        fee = 0  # someone else paid the gas (a sweeper's transferFrom, or whoever emitted the log)
    spent_observation = None
    if spend.spent_tx_hash:
        spent_observation = (
            ChainObservation.objects.filter(
                network=network, tx_hash=spend.spent_tx_hash, output_index=spend.spent_output_index
            )
            .values_list("pk", flat=True)
            .first()
        )
    seen_at = spend.seen_unconfirmed_at if spend.block_height is None else None
    if spend.block_height is None and seen_at is None:
        seen_at = now
    destinations = [destination_json(d) for d in spend.destinations]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO payments_outflowtransaction AS o
                    (network_id, tx_hash, block_height, block_hash, block_time, position_in_block,
                     seen_unconfirmed_at, canonical, fee_base_units, fee_payer, destinations,
                     recorded_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, TRUE, %s, %s, %s::jsonb, %s, %s)
                ON CONFLICT (network_id, tx_hash) DO UPDATE SET
                    fee_base_units = COALESCE(o.fee_base_units, EXCLUDED.fee_base_units),
                    fee_payer = COALESCE(NULLIF(o.fee_payer, ''), EXCLUDED.fee_payer),
                    """
                + BLOCK_FIELDS_UPSERT
                + """
                RETURNING id, destinations
                """,
                [
                    network.pk,
                    spend.tx_hash,
                    spend.block_height,
                    spend.block_hash,
                    spend.block_time,
                    spend.position_in_block,
                    seen_at,
                    fee,
                    spend.fee_payer.lower(),
                    json.dumps(destinations),
                    now,
                    now,
                ],
            )
            tx_id, stored = cursor.fetchone()
        stored = stored if isinstance(stored, list) else []
        known = {d["index"] for d in stored}
        missing = [d for d in destinations if d["index"] not in known]
        if missing:  # another transfer of the same EVM transaction: keep every recipient, by index
            merged = sorted(stored + missing, key=lambda d: d["index"])
            OutflowTransaction.objects.filter(pk=tx_id).update(destinations=merged)
        outflow, _ = Outflow.objects.get_or_create(
            network=network,
            tx_hash=spend.tx_hash,
            index=spend.index,
            defaults={
                "transaction_id": tx_id,
                "address": address,
                "intent_id": owner[1],
                "network_asset": network_asset,
                "token_contract": token,
                "amount_base_units": spend.amount_base_units,
                "spent_observation_id": spent_observation,
            },
        )
    return outflow


def outflow_transactions_set_canonical(*, transaction_ids: list[int], canonical: bool, now: datetime) -> int:
    """Mark outflow transactions (non-)canonical: a reorg dropped their block, or the unconfirmed
    transaction left the mempool unmined; their settlements follow, with events. Returns how many
    changed."""
    with transaction.atomic():
        changed = list(
            OutflowTransaction.objects.filter(pk__in=transaction_ids)
            .exclude(canonical=canonical)
            .values_list("pk", flat=True)
        )
        OutflowTransaction.objects.filter(pk__in=changed).update(canonical=canonical, updated_at=now)
        settlements_derive(transaction_ids=changed, now=now)
    return len(changed)

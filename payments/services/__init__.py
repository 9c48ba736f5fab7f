"""The only code that writes intents, observations, transitions and events, split by noun: reference data,
intents (their create apart), addresses, evidence and settling, outflows, settlements, refunds (and their
checks), events.
Callers import from here (`from payments import services`); the modules import each other only for what
they share."""

from .addresses import address_pool_refill, address_pools_top_up
from .events import events_write
from .evidence import (
    chain_tip_record,
    expire_due_intents,
    observation_record,
    observations_set_canonical,
    payment_settle,
)
from .intent_create import IntentInput, RowBesideIntent, payment_intent_create
from .intents import (
    payment_intent_cancel,
    payment_intent_fulfil,
    payment_intent_select_asset,
    price_validate,
)
from .outflows import outflow_record, outflow_transactions_set_canonical
from .reference import default_rate_source, network_asset_resolve, reference_cache_clear
from .refund_checks import refund_check
from .refunds import (
    refund_approve,
    refund_cancel,
    refund_create,
    refund_destination_set,
    refund_settle,
    refunds_settle_due,
)
from .resolutions import reason_check, resolution_check, resolution_record
from .settlements import settlements_derive

__all__ = [
    "IntentInput",
    "RowBesideIntent",
    "address_pool_refill",
    "address_pools_top_up",
    "chain_tip_record",
    "default_rate_source",
    "events_write",
    "expire_due_intents",
    "network_asset_resolve",
    "observation_record",
    "observations_set_canonical",
    "outflow_record",
    "outflow_transactions_set_canonical",
    "payment_intent_cancel",
    "payment_intent_create",
    "payment_intent_fulfil",
    "payment_intent_select_asset",
    "payment_settle",
    "price_validate",
    "reason_check",
    "reference_cache_clear",
    "refund_approve",
    "refund_cancel",
    "refund_check",
    "refund_create",
    "refund_destination_set",
    "refund_settle",
    "refunds_settle_due",
    "resolution_check",
    "resolution_record",
    "settlements_derive",
]

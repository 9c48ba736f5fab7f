from .evidence import (
    ChainObservation,
    ChainTip,
    Event,
    Resolution,
    ScanCursor,
    ScannedBlock,
    ScanStatus,
    StateTransition,
)
from .intents import IdempotencyRecord, PaymentIntent, PaymentState, Quote
from .merchants import ApiKey, ConfirmationRule, Merchant, PaymentAddress, TreasuryAddress, Wallet
from .outflows import Outflow, OutflowTransaction
from .reference import Asset, Chain, Network, NetworkAsset
from .refunds import Refund
from .settlements import Settlement, SettlementLeg
from .webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookSecret

__all__ = [
    "ApiKey",
    "Asset",
    "Chain",
    "ChainObservation",
    "ChainTip",
    "ConfirmationRule",
    "Event",
    "IdempotencyRecord",
    "Merchant",
    "Network",
    "NetworkAsset",
    "Outflow",
    "OutflowTransaction",
    "PaymentAddress",
    "PaymentIntent",
    "PaymentState",
    "Quote",
    "Refund",
    "Resolution",
    "ScanCursor",
    "ScanStatus",
    "ScannedBlock",
    "Settlement",
    "SettlementLeg",
    "StateTransition",
    "TreasuryAddress",
    "Wallet",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookSecret",
]

"""Gateway policy defaults: idempotency, quotes, address pools, the rate source, return URLs, refunds."""

import os

from gateway.env import env_number

from .core import env_bool

# Gateway policy defaults (a merchant's own policy overrides them).
GATEWAY_IDEMPOTENCY_TTL_HOURS = env_number("GATEWAY_IDEMPOTENCY_TTL_HOURS", 24, minimum=1)
GATEWAY_QUOTE_TTL_MINUTES = env_number("GATEWAY_QUOTE_TTL_MINUTES", 15, minimum=1)
# Address pools (public derivation ahead of use; see services.address_pools_top_up): the beat task keeps
# each active wallet near POOL_SIZE free addresses (size it above peak creates/s x the 5 s schedule); a
# create that finds its pool low or empty derives POOL_BATCH more itself.
GATEWAY_ADDRESS_POOL_SIZE = env_number("GATEWAY_ADDRESS_POOL_SIZE", 1000, minimum=1)
GATEWAY_ADDRESS_POOL_BATCH = env_number("GATEWAY_ADDRESS_POOL_BATCH", 50, minimum=1)
# Rate source for fiat-priced intents: "coinbase" (HTTP ticker API) or "fixed" (demo only, from
# GATEWAY_FIXED_RATES, e.g. "BTC-USD=60000,ETH-USD=3000").
GATEWAY_RATE_SOURCE = os.environ.get("GATEWAY_RATE_SOURCE", "coinbase")
GATEWAY_RATE_SOURCE_URL = os.environ.get("GATEWAY_RATE_SOURCE_URL", "https://api.coinbase.com")
GATEWAY_RATE_SOURCE_TIMEOUT_S = env_number("GATEWAY_RATE_SOURCE_TIMEOUT_S", 5.0, positive=True)
GATEWAY_FIXED_RATES = os.environ.get("GATEWAY_FIXED_RATES", "")

# success_url / cancel_url are https; plain http only to a loopback host, and only when this is set (demo).
GATEWAY_RETURN_URL_ALLOW_HTTP = env_bool("GATEWAY_RETURN_URL_ALLOW_HTTP", False)
# Refunds (payments/services/refunds.py): the merchant pays a refund within GATEWAY_REFUND_DAYS of its
# request, or it fails; the customer's destination link works as long.
GATEWAY_REFUND_DAYS = env_number("GATEWAY_REFUND_DAYS", 14, minimum=1)

"""Limits: rate limits of the checkout and the API, the trusted proxies they see clients through, and
admin login lockouts (django-axes)."""

import os
from datetime import timedelta

from gateway.env import env_number

# Public checkout pages (page, QR, choice) per client address and minute; 0: no limit. Behind reverse
# proxies, list their addresses or networks in GATEWAY_TRUSTED_PROXIES.
GATEWAY_CHECKOUT_RATE_PER_MINUTE = env_number("GATEWAY_CHECKOUT_RATE_PER_MINUTE", 120)
# The status polling has its own budget per client address and payment (one page polls 30 times a minute).
GATEWAY_CHECKOUT_POLLS_PER_MINUTE = env_number("GATEWAY_CHECKOUT_POLLS_PER_MINUTE", 90)
# ... and every status poll (of any token, known or not) counts per client address first.
GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE = env_number(
    "GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE", 600
)
# Merchant API requests per API key and second (a runaway-client guard); 0: no limit.
GATEWAY_API_RATE_PER_SECOND = env_number("GATEWAY_API_RATE_PER_SECOND", 1000)
# An API key found (with its merchant) is kept this long per process; a revocation, a merchant disabled or
# a scope change reaches every process within it. 0: every request reads the key.
GATEWAY_API_KEY_CACHE_S = env_number("GATEWAY_API_KEY_CACHE_S", 5.0)
GATEWAY_TRUSTED_PROXIES = [
    a.strip() for a in os.environ.get("GATEWAY_TRUSTED_PROXIES", "").split(",") if a.strip()
]

# Admin logins (django-axes): after GATEWAY_LOGIN_FAILURE_LIMIT failed attempts for one username, or from
# one client address, logins for that username or from that address are refused (429) until
# GATEWAY_LOGIN_COOLOFF_MINUTES after the last failure. Attempts are kept in the database, shared by every
# worker; the client address is the rate limits' (the peer, or behind GATEWAY_TRUSTED_PROXIES the client
# they forward for). `manage.py axes_reset` (or axes_reset_username) lifts a lockout early. Its app,
# backend and middleware are listed in core.INSTALLED_APPS, security.AUTHENTICATION_BACKENDS and
# core.MIDDLEWARE.
AXES_FAILURE_LIMIT = env_number("GATEWAY_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_number("GATEWAY_LOGIN_COOLOFF_MINUTES", 15.0, positive=True))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "payments.ratelimit.client_address"
AXES_RESET_ON_SUCCESS = True

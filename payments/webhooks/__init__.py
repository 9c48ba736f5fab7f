"""Webhooks: Standard Webhooks signing (`signing`), the SSRF guard (`guard`), the HTTP client
(`transport`), endpoint management (`endpoints`) and delivery from the events outbox (`delivery`).

Events are written by `payments.services` in the transaction that changes the payment; nothing here
runs inside that transaction. A dispatcher gives each new event its merchant-visible position and one
delivery per subscribed endpoint; workers claim due deliveries with `FOR UPDATE SKIP LOCKED`, send them
outside any transaction, and record every attempt.
"""

from .signing import SECRET_PREFIX, secret_generate, secret_key, signature, signed_headers

__all__ = ["SECRET_PREFIX", "secret_generate", "secret_key", "signature", "signed_headers"]

"""Domain errors: a small hierarchy with stable codes, mapped once to HTTP (api/errors.py)."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error a client or operator may see. `code` is stable; `message` is for people."""

    code = "gateway_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequest(GatewayError):
    code = "invalid_request"
    http_status = 400


class NotFound(GatewayError):
    code = "not_found"
    http_status = 404


class Conflict(GatewayError):
    code = "conflict"
    http_status = 409


class IdempotencyKeyReused(GatewayError):
    code = "idempotency_key_reused"
    http_status = 422


class IdempotencyKeyInUse(GatewayError):
    code = "idempotency_key_in_use"
    http_status = 409


class InvalidExtendedKey(GatewayError):
    code = "invalid_xpub"
    http_status = 400


class RateUnavailable(GatewayError):
    code = "rate_unavailable"
    http_status = 503

"""`Idempotency-Key` on POST, with Stripe's semantics.

The record (key, request fingerprint, response) is inserted once, in the request's own transaction
(at its end, `INSERT ... ON CONFLICT DO NOTHING`; or, for a create, in the statement that writes the
intent, where a taken key fails that statement), so a key maps to exactly one committed outcome. When
the key is taken, by a request committed earlier or by a concurrent one (the insert waits on the unique
index until that one commits), this request's effects roll back and the stored outcome answers: the
same body gets the stored response replayed, another body a 422. A request that fails looks for a
record before answering, so a replay is answered even where running the request again would fail (a
cancel already done, a rate source down), and a key reused with another body is a 422 whatever that
body holds. A failed request stores nothing: its key may be retried. Responses are kept for
GATEWAY_IDEMPOTENCY_TTL_HOURS (24 h by default).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from payments.encryption import secret_decrypt, secret_encrypt
from payments.errors import GatewayError, IdempotencyKeyReused, InvalidRequest
from payments.models import IdempotencyRecord, Merchant

MAX_KEY_LENGTH = 255
_RESPONSE_BODY = IdempotencyRecord._meta.get_field("response_body")


def request_fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


# A response that shows a secret once (a webhook endpoint created or rotated) is kept for its replay with the
# secret encrypted, like the secret itself: a database dump must not hold it in the clear.
_SECRET, _SECRET_ENCRYPTED = "secret", "secret_encrypted_for_replay"


def _shows_secret(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get(_SECRET), str)


def _body_to_store(data: Any) -> Any:
    if _shows_secret(data):
        stored = {k: v for k, v in data.items() if k != _SECRET}
        stored[_SECRET_ENCRYPTED] = secret_encrypt(data[_SECRET])
        return stored
    return data


def _body_to_replay(stored: Any) -> Any:
    if isinstance(stored, dict) and _SECRET_ENCRYPTED in stored:
        data = {k: v for k, v in stored.items() if k != _SECRET_ENCRYPTED}
        data[_SECRET] = secret_decrypt(stored[_SECRET_ENCRYPTED])
        return data
    return stored


class _KeyTaken(Exception):
    """The key has a record already: roll this request back and answer with the record."""


_INSERT = (
    "INSERT INTO payments_idempotencyrecord (merchant_id, key, request_fingerprint, created_at, "
    "response_status, response_body) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (merchant_id, key) DO NOTHING RETURNING id"
)


@dataclass
class RecordSlot:
    """The request's record, for a handler whose service writes it in its own transaction (a
    `services.RowBesideIntent`): `answering(status)` gives the row for the response the handler will
    return, whose body is the representation the service writes. `written` is True once it is."""

    merchant_id: str
    key: str
    fingerprint: str
    created_at: datetime
    status: int = 200
    written: bool | None = None

    def answering(self, status: int) -> RecordSlot:
        self.status = status
        return self

    def insert_sql(
        self, representation: dict[str, Any], representation_sql: str, condition: str = "TRUE"
    ) -> tuple[str, list[Any]]:
        """`INSERT ... RETURNING id` of the record if `condition` (SQL) holds, which fails with an
        IntegrityError when the key is taken (the whole statement with it)."""
        keys = [self.merchant_id, self.key, self.fingerprint, self.created_at, self.status]
        if _shows_secret(representation):  # the statement's snapshot would store the secret in the clear
            raise ValueError(
                "a response showing a secret is stored encrypted: not from a statement's snapshot"
            )
        return (
            "INSERT INTO payments_idempotencyrecord (merchant_id, key, request_fingerprint, created_at, "
            f"response_status, response_body) SELECT %s, %s, %s, %s, %s, {representation_sql} "
            f"WHERE {condition} RETURNING id",
            keys,
        )

    def inserted(self, row_id: int) -> None:
        self.written = True


def idempotent(
    request: Request, merchant: Merchant, handler: Callable[..., Response], *, slot: bool = False
) -> Response:
    """Run `handler` once per Idempotency-Key (see above). With `slot`, the handler is called with the
    `RecordSlot` (None without a key), outside any transaction: its service writes the record with its
    own writes, in a transaction (or a single statement) of its own."""
    key = request.headers.get("Idempotency-Key")
    wants_slot = slot
    if key is None:
        if wants_slot:
            return handler(None)
        with transaction.atomic():
            return handler()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            code="invalid_idempotency_key",
        )
    fingerprint = request_fingerprint(request)
    now = timezone.now()
    ttl = timedelta(hours=settings.GATEWAY_IDEMPOTENCY_TTL_HOURS)
    for _ in range(2):  # a second round only after dropping an expired record
        try:
            if wants_slot:
                record = RecordSlot(merchant.pk, key, fingerprint, now)
                response = handler(record)
                if not record.written:
                    raise RuntimeError("the handler answered without writing the Idempotency-Key's record")
                return response
            with transaction.atomic():
                response = handler()
                if _record_insert(merchant, key, fingerprint, now, response):
                    return response
                raise _KeyTaken
        except (_KeyTaken, GatewayError, APIException, IntegrityError) as exc:
            record = IdempotencyRecord.objects.filter(merchant=merchant, key=key).first()
            if record is None:
                if isinstance(exc, _KeyTaken) or _on_the_key(exc):
                    continue  # its record was purged meanwhile: run the request again
                raise  # the request's own error: no earlier outcome to answer with
            if record.created_at < now - ttl:
                IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).delete()
                continue
            if record.request_fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with other parameters; use a new key for a new request"
                ) from None
            return Response(
                _body_to_replay(record.response_body),
                status=record.response_status,
                headers={"Idempotent-Replayed": "true"},
            )
    raise InvalidRequest("could not claim the Idempotency-Key", code="invalid_idempotency_key")


_KEY_CONSTRAINT = "idempotency_merchant_key_unique"


def _on_the_key(exc: Exception) -> bool:
    """Whether an error is the record's key found taken (a create's statement fails on it)."""
    diag = getattr(exc.__cause__, "diag", None)
    return isinstance(exc, IntegrityError) and getattr(diag, "constraint_name", None) == _KEY_CONSTRAINT


def _record_insert(merchant: Merchant, key: str, fingerprint: str, now, response: Response) -> bool:
    """The record with the response, unless the key has one (then False, after waiting for a concurrent
    request holding it to end)."""
    body = _RESPONSE_BODY.get_db_prep_save(_body_to_store(response.data), connection)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [merchant.pk, key, fingerprint, now, response.status_code, body])
        return cursor.fetchone() is not None

"""The tamper-evident audit log: `audit_record` appends an entry hash-chained to the one before it (under a
lock, so the chain never forks), `audit_checkpoint_sign` signs the chain's head with a key from the
environment, and `audit_verify` recomputes every link and checkpoint and names the first that fails.

The database refuses UPDATE, DELETE and TRUNCATE on the log (triggers); someone who can bypass them (a
database superuser) still cannot rewrite an entry without breaking every later link, nor drop the newest
entries without leaving a signed checkpoint that names what is gone."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from .models import AuditCheckpoint, AuditEntry

logger = logging.getLogger("gateway.audit")


def request_audit_context(request) -> dict[str, str]:
    """Where an action came from, for its audit entry: the X-Request-ID (if a proxy sets one) and the
    client address (behind GATEWAY_TRUSTED_PROXIES, the forwarded one)."""
    from payments.ratelimit import client_address

    return {
        "request_id": request.META.get("HTTP_X_REQUEST_ID", "")[:64],
        "client_address": client_address(request)[:45],
    }


GENESIS = "0" * 64
# pg_advisory_xact_lock key of the chain's head: held to the end of the writing transaction.
_HEAD_LOCK = 0x6175_6469_7400  # "audit\0"


def _json_value(value: Any) -> Any:
    """What the database will give back: JSON values only (decimals and times as strings)."""
    return None if value is None else json.loads(json.dumps(value, default=str))


def _canonical(entry: AuditEntry) -> bytes:
    fields = {
        "sequence": entry.sequence,
        "created_at": entry.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "merchant_id": entry.merchant_id,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
        "request_id": entry.request_id,
        "client_address": entry.client_address,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _entry_hash(previous_hash: str, entry: AuditEntry) -> str:
    return hashlib.sha256(previous_hash.encode() + b"\n" + _canonical(entry)).hexdigest()


def audit_record(
    *,
    actor: str,
    action: str,
    now: datetime,
    role: str = "",
    merchant_id: str = "",
    object_type: str = "",
    object_id: str = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
    request_id: str = "",
    client_address: str = "",
) -> AuditEntry:
    """Append one entry. Call it inside the transaction of the change it records: both commit or neither,
    and the head's lock is held until then (audited changes are written one after another)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_HEAD_LOCK])
        head = AuditEntry.objects.order_by("-sequence").values_list("sequence", "entry_hash").first()
        sequence, previous_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
        entry = AuditEntry(
            sequence=sequence,
            created_at=now,
            actor=actor,
            role=role,
            action=action,
            merchant_id=merchant_id or "",
            object_type=object_type,
            object_id=str(object_id or ""),
            before=_json_value(before),
            after=_json_value(after),
            reason=reason,
            request_id=request_id,
            client_address=client_address,
            previous_hash=previous_hash,
        )
        entry.entry_hash = _entry_hash(previous_hash, entry)
        entry.save(force_insert=True)
    return entry


# --- checkpoints ------------------------------------------------------------------------------------


def _signing_keys() -> list[bytes]:
    """GATEWAY_AUDIT_KEYS (the first signs, all verify); without them a key derived from SECRET_KEY."""
    keys = [k.encode() for k in settings.GATEWAY_AUDIT_KEYS]
    return keys or [hashlib.sha256(b"gateway audit checkpoints:" + settings.SECRET_KEY.encode()).digest()]


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"key id:" + key).hexdigest()[:16]


def _signature(key: bytes, sequence: int, entry_hash: str, signed_at: datetime) -> str:
    message = f"{sequence}:{entry_hash}:{signed_at.astimezone(UTC).isoformat(timespec='microseconds')}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def audit_checkpoint_sign(*, now: datetime) -> AuditCheckpoint | None:
    """Sign the chain's head (nothing when the log is empty or the head is signed already)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_HEAD_LOCK])
        head = AuditEntry.objects.order_by("-sequence").values_list("sequence", "entry_hash").first()
        if head is None:
            return None
        latest = AuditCheckpoint.objects.order_by("-sequence").first()
        if latest is not None and latest.sequence == head[0]:
            return latest
        key = _signing_keys()[0]
        checkpoint = AuditCheckpoint.objects.create(
            sequence=head[0],
            entry_hash=head[1],
            signed_at=now,
            key_id=_key_id(key),
            signature=_signature(key, head[0], head[1], now),
        )
        transaction.on_commit(lambda: _checkpoint_announce(checkpoint))
        return checkpoint


def _checkpoint_announce(checkpoint: AuditCheckpoint) -> None:
    """Emit the signed head as a log event (`audit.checkpoint`, a JSON object), so a copy of it lives
    wherever the logs are shipped, outside the database: a log wiped together with its checkpoints still
    disagrees with the heads announced before."""
    logger.info(
        "audit.checkpoint %s",
        json.dumps(
            {
                "event": "audit.checkpoint",
                "sequence": checkpoint.sequence,
                "entry_hash": checkpoint.entry_hash,
                "signed_at": checkpoint.signed_at.astimezone(UTC).isoformat(timespec="microseconds"),
                "key_id": checkpoint.key_id,
                "signature": checkpoint.signature,
            },
            sort_keys=True,
        ),
    )


# --- verification -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditVerification:
    entries: int
    checkpoints: int
    head: int | None
    problem: str | None  # the first link or checkpoint that fails, None if all hold

    @property
    def ok(self) -> bool:
        return self.problem is None


def _entries() -> Iterator[AuditEntry]:
    return AuditEntry.objects.order_by("sequence").iterator(chunk_size=2000)


def audit_verify() -> AuditVerification:
    """Recompute every link from the first entry and check every checkpoint's signature and the entry it
    names. Stops at the first problem and names it."""
    hashes: dict[int, str] = {}
    expected, previous_hash, count = 1, GENESIS, 0
    problem = None
    for entry in _entries():
        count += 1
        if entry.sequence != expected:
            problem = f"entry #{expected} is missing (the next entry is #{entry.sequence})"
            break
        if entry.previous_hash != previous_hash:
            problem = f"entry #{entry.sequence} does not follow entry #{expected - 1} (its link was changed)"
            break
        if _entry_hash(previous_hash, entry) != entry.entry_hash:
            problem = f"entry #{entry.sequence} was altered (its content does not match its hash)"
            break
        hashes[entry.sequence] = previous_hash = entry.entry_hash
        expected += 1
    head = expected - 1 if expected > 1 else None
    keys = {_key_id(key): key for key in _signing_keys()}
    checkpoints = 0
    for checkpoint in AuditCheckpoint.objects.order_by("signed_at", "id"):
        if problem:
            break
        checkpoints += 1
        key = keys.get(checkpoint.key_id)
        if key is None:
            problem = f"checkpoint at #{checkpoint.sequence} was signed by a key not in GATEWAY_AUDIT_KEYS"
        elif not hmac.compare_digest(
            _signature(key, checkpoint.sequence, checkpoint.entry_hash, checkpoint.signed_at),
            checkpoint.signature,
        ):
            problem = f"checkpoint at #{checkpoint.sequence} has a bad signature"
        elif checkpoint.sequence not in hashes:
            problem = (
                f"checkpoint at #{checkpoint.sequence} names an entry that is gone: the log ends at "
                f"#{head or 0} (its newest entries were removed)"
            )
        elif hashes[checkpoint.sequence] != checkpoint.entry_hash:
            problem = f"entry #{checkpoint.sequence} is not the entry its checkpoint signed"
    return AuditVerification(entries=count, checkpoints=checkpoints, head=head, problem=problem)

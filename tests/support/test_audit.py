"""The audit log is append-only and tamper-evident: the database refuses changes, `verify_audit` passes on
an untouched log and names the first bad entry after a row is altered or removed (with the triggers
disabled, as a database superuser could), including the newest rows, which the signed checkpoints catch."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

from support.audit import GENESIS, audit_checkpoint_sign, audit_record, audit_verify
from support.models import AuditCheckpoint, AuditEntry

pytestmark = pytest.mark.django_db


def record_some(count: int = 5) -> list[AuditEntry]:
    now = timezone.now()
    return [
        audit_record(
            actor=f"lead{i % 2}",
            role="support_lead",
            action="payment.accept_late",
            now=now + timedelta(seconds=i),
            merchant_id="mer_x",
            object_type="payment_intent",
            object_id=f"pi_{i}",
            before={"state": "expired", "amount": Decimal("1.50")},
            after={"state": "paid"},
            reason="the customer paid two minutes late; the shop agreed",
            request_id=f"req-{i}",
            client_address="203.0.113.7",
        )
        for i in range(count)
    ]


def verify() -> str:
    try:
        call_command("verify_audit")
    except CommandError as exc:
        return str(exc)
    return "ok"


def as_superuser(sql: str, params=()) -> None:
    """What someone with the database's owner rights can do: switch the triggers off, change, switch on."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE support_auditentry DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE support_auditentry ENABLE TRIGGER USER")


def test_entries_chain_from_genesis_and_verify():
    entries = record_some()
    assert [e.sequence for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].previous_hash == GENESIS
    assert all(b.previous_hash == a.entry_hash for a, b in itertools.pairwise(entries))
    assert AuditEntry.objects.get(sequence=1).before == {"state": "expired", "amount": "1.50"}
    assert verify() == "ok"
    assert audit_verify().entries == 5


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE support_auditentry SET reason = 'nothing happened' WHERE sequence = 2",
        "DELETE FROM support_auditentry WHERE sequence = 5",
        "UPDATE support_auditcheckpoint SET sequence = 1",
        "DELETE FROM support_auditcheckpoint",
    ],
)
def test_the_database_refuses_to_change_the_log(sql):
    record_some()
    audit_checkpoint_sign(now=timezone.now())
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    assert verify() == "ok"


def test_truncate_is_refused_where_the_database_does_not_allow_it():
    record_some()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET LOCAL gateway.audit_truncate_allowed = 'off'")
        cursor.execute("TRUNCATE support_auditentry")
    assert AuditEntry.objects.count() == 5


def test_an_altered_entry_is_named():
    record_some()
    as_superuser("UPDATE support_auditentry SET reason = 'nothing to see' WHERE sequence = 3")
    assert "entry #3 was altered" in verify()


def test_an_altered_entry_with_its_hash_recomputed_breaks_the_next_link():
    entries = record_some()
    forged = AuditEntry.objects.get(sequence=3)
    forged.actor = "someone else"
    from support.audit import _entry_hash

    as_superuser(
        "UPDATE support_auditentry SET actor = %s, entry_hash = %s WHERE sequence = 3",
        ["someone else", _entry_hash(entries[1].entry_hash, forged)],
    )
    assert "entry #4 does not follow entry #3" in verify()


def test_a_deleted_middle_entry_is_named():
    record_some()
    as_superuser("DELETE FROM support_auditentry WHERE sequence = 3")
    assert "entry #3 is missing" in verify()


def test_deleting_the_newest_entries_is_caught_by_the_checkpoint():
    record_some()
    audit_checkpoint_sign(now=timezone.now())
    as_superuser("DELETE FROM support_auditentry WHERE sequence >= 4")
    message = verify()
    assert "checkpoint at #5 names an entry that is gone" in message and "ends at #3" in message


def test_a_forged_checkpoint_is_named():
    record_some()
    checkpoint = audit_checkpoint_sign(now=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE support_auditcheckpoint DISABLE TRIGGER USER")
        cursor.execute("UPDATE support_auditcheckpoint SET sequence = 4 WHERE id = %s", [checkpoint.pk])
        cursor.execute("ALTER TABLE support_auditcheckpoint ENABLE TRIGGER USER")
    assert "checkpoint at #4 has a bad signature" in verify()


def test_checkpoints_sign_the_head_once_and_verify_with_a_rotated_key_list(settings):
    assert audit_checkpoint_sign(now=timezone.now()) is None  # nothing to sign yet
    record_some(2)
    settings.GATEWAY_AUDIT_KEYS = ["old-key"]
    first = audit_checkpoint_sign(now=timezone.now())
    assert audit_checkpoint_sign(now=timezone.now()).pk == first.pk  # the head is signed already
    record_some(1)
    settings.GATEWAY_AUDIT_KEYS = ["new-key", "old-key"]
    audit_checkpoint_sign(now=timezone.now())
    assert AuditCheckpoint.objects.count() == 2 and verify() == "ok"
    settings.GATEWAY_AUDIT_KEYS = ["new-key"]
    assert "signed by a key not in GATEWAY_AUDIT_KEYS" in verify()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_fork_the_chain():
    """Eight threads, each with its own database connection, append at once: one chain, no gaps."""
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(10):
                audit_record(actor=f"w{n}", action="test.write", now=timezone.now(), object_id=f"{n}-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert list(AuditEntry.objects.values_list("sequence", flat=True)) == list(range(1, 81))
    assert verify() == "ok"


def test_a_run_of_the_consoles_actions_verifies_and_tampering_with_it_is_named(settings):
    """Every kind of console action writes its entries into one chain that `verify_audit` accepts; then a
    changed entry, a removed middle entry and a removed tail are each named."""
    from django.contrib.auth.models import User

    from support.approvals import approval_decide, dangerous_action_submit
    from support.cases import case_assign, case_escalate, case_note_add, case_status_set
    from support.dangerous import policy_payload
    from support.models import SupportCase
    from support.payment_actions import checkout_link_resend
    from support.roles import role_grant
    from tests.factories import make_merchant
    from tests.payments.test_services_settle import new_intent

    now = timezone.now()
    shop = make_merchant("Shop")
    people = {}
    for name, role in (("agent", "support_agent"), ("ann", "support_lead"), ("bob", "support_lead")):
        people[name] = User.objects.create_user(name, is_staff=True)
        role_grant(user=people[name], role=role, merchant_ids=[shop.pk], actor="system:manage.py")
    people = {name: User.objects.get(pk=user.pk) for name, user in people.items()}  # fresh permission caches
    intent = new_intent(shop, now=now)
    case = SupportCase.objects.create(
        kind="late_payment", merchant=shop, intent=intent, dedupe_key="k", opened_at=now, due_by=now
    )
    agent, ann, bob = people["agent"], people["ann"], people["bob"]
    case_note_add(actor=agent, case=case, body="called the customer", now=now)
    case_assign(actor=agent, case=case, assignee=agent, now=now)
    case_escalate(actor=agent, case=case, note="needs a lead", now=now)
    case_status_set(actor=ann, case=case, status="resolved", note="accepted after approval", now=now)
    checkout_link_resend(actor=agent, intent=intent, note="customer lost the link", now=now)
    reason = "The customer paid by bank transfer; the receipt is in ticket 981."
    asked = dangerous_action_submit(
        actor=ann,
        action="payment.mark_paid",
        merchant=shop,
        intent=intent,
        payload={},
        reason=reason,
        now=now,
    )
    approval_decide(actor=bob, approval_id=asked.approval.pk, approve=True, now=now)
    policy = policy_payload(
        four_eyes="never", threshold_amount=None, threshold_currency="", config_four_eyes=True
    )
    asked = dangerous_action_submit(
        actor=ann, action="merchant.policy_set", merchant=shop, payload=policy, reason=reason, now=now
    )
    approval_decide(actor=bob, approval_id=asked.approval.pk, approve=False, note="not agreed", now=now)
    audit_checkpoint_sign(now=now)
    actions = list(AuditEntry.objects.order_by("sequence").values_list("action", flat=True))
    assert actions == [
        "role.granted",
        "role.granted",
        "role.granted",
        "case.note",
        "case.assign",
        "case.escalate",
        "case.status",
        "payment.checkout_link_resent",
        "approval.requested",
        "payment.mark_paid",
        "approval.approved",
        "approval.requested",
        "approval.rejected",
    ]
    assert verify() == "ok"

    as_superuser("UPDATE support_auditentry SET actor = 'someone' WHERE sequence = 10")
    assert "#10" in verify()
    as_superuser("UPDATE support_auditentry SET actor = 'ann' WHERE sequence = 10")
    assert verify() == "ok"
    as_superuser("DELETE FROM support_auditentry WHERE sequence = 13")  # the newest: the checkpoint names it
    assert "#13" in verify()
    as_superuser("DELETE FROM support_auditentry WHERE sequence = 6")
    assert "#6" in verify()


def test_each_checkpoint_is_announced_as_a_log_event_once_committed(
    settings, caplog, django_capture_on_commit_callbacks
):
    import hashlib
    import hmac
    import json

    record_some(2)
    settings.GATEWAY_AUDIT_KEYS = ["log-key"]
    with caplog.at_level("INFO", logger="gateway.audit"):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            checkpoint = audit_checkpoint_sign(now=timezone.now())
        assert not [r for r in caplog.records if r.name == "gateway.audit"]  # not before the commit
        for callback in callbacks:
            callback()
    (record,) = [r for r in caplog.records if r.name == "gateway.audit"]
    announced = json.loads(record.getMessage().removeprefix("audit.checkpoint "))
    head = AuditEntry.objects.order_by("-sequence").first()
    assert (announced["event"], announced["sequence"], announced["entry_hash"]) == (
        "audit.checkpoint",
        head.sequence,
        head.entry_hash,
    )
    # anyone holding the key can check the announced head without the database
    message = f"{head.sequence}:{head.entry_hash}:{announced['signed_at']}".encode()
    assert announced["signature"] == hmac.new(b"log-key", message, hashlib.sha256).hexdigest()
    assert announced["signature"] == checkpoint.signature


def test_a_log_emptied_with_its_checkpoints_fails_against_an_announced_head():
    record_some(3)
    checkpoint = audit_checkpoint_sign(now=timezone.now())
    announced = f"{checkpoint.sequence}:{checkpoint.entry_hash}"
    call_command("verify_audit", "--head", announced)
    as_superuser("DELETE FROM support_auditentry")
    with connection.cursor() as cursor:  # the checkpoints too, as the table's owner could
        cursor.execute("ALTER TABLE support_auditcheckpoint DISABLE TRIGGER USER")
        cursor.execute("DELETE FROM support_auditcheckpoint")
        cursor.execute("ALTER TABLE support_auditcheckpoint ENABLE TRIGGER USER")
    assert verify() == "ok"  # nothing left inside the database says anything is missing
    with pytest.raises(CommandError, match="announced entry #3 is gone"):
        call_command("verify_audit", "--head", announced)
    with pytest.raises(CommandError, match="SEQUENCE:HASH"):
        call_command("verify_audit", "--head", "3:nothex")

"""Cases open once per exception, from payments' event stream as dispatched (never from inside payments'
transactions), and from a sweep for what no event announces; reading the stream again opens nothing new."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from payments import services
from payments.models import PaymentIntent
from payments.webhooks.delivery import events_dispatch
from payments.webhooks.endpoints import endpoint_create, endpoint_disable, endpoint_enable
from support.cases import cases_open
from support.models import EventCursor, SupportCase
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import block, new_intent, transfer

pytestmark = pytest.mark.django_db


def cases(**filters) -> list[tuple[str, str | None, list[str]]]:
    return list(
        SupportCase.objects.filter(**filters)
        .order_by("id")
        .values_list("kind", "intent_id", "transaction_hashes")
    )


def dispatch_and_open(now=None) -> None:
    now = now or timezone.now()
    events_dispatch(now=now)
    cases_open(now=now)


def test_a_late_payment_opens_one_case_with_its_transaction():
    intent = new_intent(now=timezone.now() - timedelta(hours=1))
    now = timezone.now()
    services.expire_due_intents(now=now)
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xb200", now=now)
    services.observation_record(transfer=transfer(intent, tx="0xlate", **block(150, now)), now=now)
    cases_open(now=now)
    assert cases() == [], "an event is read once it is dispatched (it has a position)"
    dispatch_and_open(now)
    assert cases() == [("late_payment", intent.pk, ["0xlate"])]
    case = SupportCase.objects.get()
    assert case.status == "open" and case.merchant_id == intent.merchant_id and case.assignee is None
    assert case.due_by == case.opened_at + timedelta(hours=settings.GATEWAY_CASE_DUE_HOURS)
    assert case.source_event_id == intent.events.get(type="payment.late_payment_detected").pk
    # a second late transaction is a second exception
    services.observation_record(transfer=transfer(intent, tx="0xlate2", **block(151, now)), now=now)
    dispatch_and_open(now)
    assert [c[2] for c in cases()] == [["0xlate"], ["0xlate2"]]


def test_reading_the_stream_again_opens_nothing_new():
    now = timezone.now()
    intent = new_intent(now=now)
    services.observation_record(
        transfer=transfer(intent, tx="0xother", token_contract="0x" + "ab" * 20, **block(5, now)), now=now
    )
    dispatch_and_open(now)
    assert cases() == [("wrong_asset", intent.pk, ["0xother"])]
    EventCursor.objects.filter(name="cases").update(position=0)  # as after a replay from the start
    dispatch_and_open(now)
    dispatch_and_open(now)
    assert SupportCase.objects.count() == 1


def test_wrong_network_and_duplicate_payments_open_cases():
    now = timezone.now()
    intent = new_intent(now=now)
    services.observation_record(
        transfer=transfer(
            intent,
            network_code="polygon",
            token_contract="0x3c499c542cef5e3811e1192ce70d8cc03d5c3359",
            tx="0xpoly",
            **block(5, now),
        ),
        now=now,
    )
    services.chain_tip_record(network_code="ethereum", height=140, block_hash="0xb140", now=now)
    services.observation_record(transfer=transfer(intent, tx="0xpaid", **block(100, now)), now=now)
    services.observation_record(transfer=transfer(intent, tx="0xagain", **block(101, now)), now=now)
    dispatch_and_open(now)
    assert sorted(c[0] for c in cases()) == ["duplicate_payment", "wrong_network"]
    assert ("duplicate_payment", intent.pk, ["0xagain"]) in cases()


def test_an_overpayment_opens_one_case():
    now = timezone.now()
    intent = new_intent(now=now, amount="10")
    services.chain_tip_record(network_code="ethereum", height=140, block_hash="0xb140", now=now)
    services.observation_record(
        transfer=transfer(intent, tx="0xbig", amount=15_000_000, **block(100, now)), now=now
    )
    assert PaymentIntent.objects.get(pk=intent.pk).state == "overpaid"
    dispatch_and_open(now)
    dispatch_and_open(now)
    assert cases() == [("overpaid", intent.pk, ["0xbig"])]


def test_an_underpayment_opens_a_case_only_once_its_window_closes():
    now = timezone.now()
    intent = new_intent(now=now, amount="10")
    services.chain_tip_record(network_code="ethereum", height=140, block_hash="0xb140", now=now)
    services.observation_record(
        transfer=transfer(intent, tx="0xhalf", amount=5_000_000, **block(100, now)), now=now
    )
    assert PaymentIntent.objects.get(pk=intent.pk).state == "underpaid"
    dispatch_and_open(now)
    assert cases() == [], "a top-up can still come"
    later = intent.expires_at + timedelta(seconds=1)
    dispatch_and_open(later)
    dispatch_and_open(later + timedelta(minutes=5))
    assert cases() == [("underpaid_expired", intent.pk, [])]


def test_each_time_the_gateway_disables_an_endpoint_is_a_case(settings):
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    merchant = make_merchant()
    now = timezone.now()
    endpoint, _ = endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook", now=now)
    endpoint_disable(endpoint=endpoint, reason="merchant", now=now)
    dispatch_and_open(now)
    assert cases() == [], "the merchant's own choice"
    endpoint_enable(endpoint=endpoint, now=now)
    endpoint_disable(endpoint=endpoint, reason="failing", now=now + timedelta(hours=1))
    dispatch_and_open(now + timedelta(hours=1))
    dispatch_and_open(now + timedelta(hours=2))
    assert SupportCase.objects.filter(kind="webhook_endpoint_disabled", endpoint=endpoint).count() == 1
    endpoint_enable(endpoint=endpoint, now=now + timedelta(hours=3))
    endpoint_disable(endpoint=endpoint, reason="gone", now=now + timedelta(hours=4))
    dispatch_and_open(now + timedelta(hours=4))
    assert SupportCase.objects.filter(kind="webhook_endpoint_disabled", endpoint=endpoint).count() == 2


def test_the_beat_opens_cases_every_few_seconds():
    schedule = settings.CELERY_BEAT_SCHEDULE["open-support-cases"]
    assert schedule["task"] == "support.tasks.cases_open" and schedule["schedule"] <= 5
    from support.tasks import cases_open as task

    intent = new_intent(now=timezone.now() - timedelta(hours=1))
    now = timezone.now()
    services.expire_due_intents(now=now)
    services.observation_record(transfer=transfer(intent, tx="0xl", **block(150, now)), now=now)
    events_dispatch(now=now)
    assert task.apply().get() > 0
    assert cases() == [("late_payment", intent.pk, ["0xl"])]


# --- safe actions on cases ---------------------------------------------------------------------------


def staff(username: str, *codenames: str, merchant=None):
    return make_staff(*codenames, merchants=[merchant] if merchant else [], username=username)


def a_case() -> SupportCase:
    intent = new_intent(now=timezone.now() - timedelta(hours=1))
    now = timezone.now()
    services.expire_due_intents(now=now)
    services.observation_record(transfer=transfer(intent, tx="0xl", **block(150, now)), now=now)
    dispatch_and_open(now)
    return SupportCase.objects.get()


def test_assign_note_and_resolve_are_audited_and_verify():
    from django.core.management import call_command

    from support.cases import case_assign, case_note_add, case_status_set
    from support.models import AuditEntry

    case = a_case()
    agent = staff("agent", "view_supportcase", "change_supportcase", merchant=case.merchant)
    now = timezone.now()
    case = case_assign(actor=agent, case=case, assignee=agent, now=now, client_address="203.0.113.9")
    assert (case.assignee, case.status) == (agent, "in_progress")
    case_note_add(actor=agent, case=case, body="Customer says they paid two minutes late.", now=now)
    case = case_status_set(actor=agent, case=case, status="waiting_on_customer", now=now)
    with pytest.raises(Exception, match="say how the case was resolved"):
        case_status_set(actor=agent, case=case, status="resolved", now=now)
    case = case_status_set(actor=agent, case=case, status="resolved", note="Lead accepted it.", now=now)
    assert case.resolved_at == now
    assert list(case.notes.values_list("body", flat=True)) == [
        "Customer says they paid two minutes late.",
        "Lead accepted it.",
    ]
    entries = list(AuditEntry.objects.values_list("actor", "action", "object_id", "merchant_id"))
    assert entries == [
        ("agent", "case.assign", str(case.pk), case.merchant_id),
        ("agent", "case.note", str(case.pk), case.merchant_id),
        ("agent", "case.status", str(case.pk), case.merchant_id),
        ("agent", "case.status", str(case.pk), case.merchant_id),
    ]
    assert AuditEntry.objects.first().client_address == "203.0.113.9"
    assert AuditEntry.objects.first().after == {"assignee": "agent", "status": "in_progress"}
    call_command("verify_audit")


def test_who_may_only_look_or_works_for_another_merchant_cannot_act_and_nothing_is_written():
    from django.core.exceptions import PermissionDenied

    from support.cases import case_assign, case_note_add, case_status_set
    from support.models import AuditEntry, CaseNote

    case = a_case()
    viewer = staff("viewer", "view_supportcase", merchant=case.merchant)
    elsewhere = staff(
        "elsewhere", "view_supportcase", "change_supportcase", merchant=make_merchant("B", account=1)
    )
    now = timezone.now()
    for act in (
        lambda: case_assign(actor=elsewhere, case=case, assignee=elsewhere, now=now),
        lambda: case_note_add(actor=elsewhere, case=case, body="x", now=now),
        lambda: case_assign(actor=viewer, case=case, assignee=viewer, now=now),
        lambda: case_note_add(actor=viewer, case=case, body="x", now=now),
        lambda: case_status_set(actor=viewer, case=case, status="resolved", note="x", now=now),
    ):
        with pytest.raises(PermissionDenied):
            act()
    case.refresh_from_db()
    assert (case.status, case.assignee) == ("open", None)
    assert not AuditEntry.objects.exists() and not CaseNote.objects.exists()


def test_the_admin_shows_a_case_to_staff_of_its_merchant_only(client):
    case = a_case()
    mine = staff("mine", "view_supportcase", merchant=case.merchant)
    other = staff("other", "view_supportcase", merchant=make_merchant("B", account=1))
    client.force_login(mine)
    row = f"/admin/support/supportcase/{case.pk}/change/".encode()
    assert row in client.get("/admin/support/supportcase/").content
    page = client.get(f"/admin/support/supportcase/{case.pk}/change/")
    assert page.status_code == 200 and b"0xl" in page.content
    assert b'name="_save"' not in page.content, "no dead controls: the case is worked through its actions"
    client.force_login(other)
    assert row not in client.get("/admin/support/supportcase/").content
    assert client.get(f"/admin/support/supportcase/{case.pk}/change/").status_code == 404


def test_the_audit_log_admin_is_read_only_and_scoped(client):
    from support.audit import audit_record

    case = a_case()
    now = timezone.now()
    audit_record(actor="lead", action="case.status", now=now, merchant_id=case.merchant_id, object_id="1")
    audit_record(actor="lead", action="case.status", now=now, merchant_id="mer_elsewhere", object_id="2")
    audit_record(actor="system:manage.py", action="role.granted", now=now)
    auditor = staff("auditor", "view_auditentry", merchant=case.merchant)
    client.force_login(auditor)
    listing = client.get("/admin/support/auditentry/")
    assert listing.status_code == 200
    assert b"role.granted" in listing.content and b"mer_elsewhere" not in listing.content
    entry = __import__("support.models", fromlist=["AuditEntry"]).AuditEntry.objects.get(sequence=1)
    page = client.get(f"/admin/support/auditentry/{entry.pk}/change/")
    assert (
        page.status_code == 200 and b'name="_save"' not in page.content and b"deletelink" not in page.content
    )
    assert client.post(f"/admin/support/auditentry/{entry.pk}/delete/").status_code == 403


def test_a_litecoin_duplicate_payment_on_its_second_output_opens_a_case():
    """An exception's dedupe key names network, txid and output: on litecoin-regtest with a 64-hex txid
    and output 1 it is 101 characters (it once failed the event's insert, and the whole network's scan)."""
    from tests.ledger import ltc_intent, paid

    intent = ltc_intent(make_merchant())
    first, again = "1f" * 32, "2e" * 32
    paid(intent, first, index=1, height=10)
    paid(intent, again, index=1, height=11)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.flags == ["duplicate_payment"]
    key = f"duplicate_payment:litecoin-regtest/{again}/1"
    assert intent.events.get(type="payment.duplicate_payment_detected").dedupe_key == key
    dispatch_and_open()
    assert cases() == [("duplicate_payment", intent.pk, [again])]


def test_the_longest_exception_key_fits():
    """The longest network code the model allows, an EVM hash and a large index still fit the event's and
    the case's keys."""
    from payments.models import Event, Network

    code = "n" * Network._meta.get_field("code").max_length
    event_key = f"duplicate_payment:{code}/0x{'ab' * 32}/{2**31}"
    assert len(event_key) <= Event._meta.get_field("dedupe_key").max_length
    kind = max(SupportCase.Kind.values, key=len)
    case_key = f"{kind}:pi_{'x' * 24}:{event_key}"
    assert len(case_key) <= SupportCase._meta.get_field("dedupe_key").max_length

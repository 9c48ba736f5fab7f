"""Auditors export the audit log as CSV: what the list shows (scope, filters), every entry's hashes so the
chain can be re-verified outside the gateway, and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import hashlib
import io

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway.csvexport import safe_cell
from support.audit import audit_record
from support.models import AuditEntry
from tests.factories import make_merchant, make_staff

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("value", "expected"),
    [  # OWASP, "CSV Injection": cells beginning with these are interpreted by spreadsheet software
        ("=1+2", "'=1+2"),
        ("+41 22 000", "'+41 22 000"),
        ("-3", "'-3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        (None, ""),
        (12, "12"),
    ],
)
def test_formula_cells_are_made_inert(value, expected):
    assert safe_cell(value) == expected


def export(client, query="") -> list[dict]:
    response = client.get(reverse("admin:support_auditentry_export") + query)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv") and "no-store" in response["Cache-Control"]
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_an_auditor_exports_the_entries_of_their_merchants_with_their_hashes():
    shop, other = make_merchant("Shop"), make_merchant("Other", account=1)
    now = timezone.now()
    audit_record(
        actor="ann", action="case.note", now=now, merchant_id=shop.pk, reason='=HYPERLINK("http://x")'
    )
    audit_record(actor="bob", action="case.note", now=now, merchant_id=other.pk, reason="other shop")
    audit_record(actor="system:manage.py", action="role.granted", now=now, after={"roles": ["auditor"]})
    auditor = make_staff("support.view_auditentry", merchants=[shop])
    client = Client()
    client.force_login(auditor)
    listing = client.get(reverse("admin:support_auditentry_changelist")).content.decode()
    assert reverse("admin:support_auditentry_export") in listing

    rows = export(client)
    assert [(r["sequence"], r["actor"]) for r in rows] == [("1", "ann"), ("3", "system:manage.py")]
    assert rows[0]["reason"] == '\'=HYPERLINK("http://x")'
    assert rows[1]["after"] == '{"roles": ["auditor"]}'
    stored = dict(AuditEntry.objects.values_list("sequence", "entry_hash"))
    assert all(r["entry_hash"] == stored[int(r["sequence"])] for r in rows)
    assert rows[1]["previous_hash"] == stored[2]  # the chain runs through entries the auditor cannot see
    assert all(len(r["entry_hash"]) == 64 and int(r["entry_hash"], 16) >= 0 for r in rows)
    # the list's filters apply to the export
    assert [r["action"] for r in export(client, "?action=role.granted")] == ["role.granted"]
    assert hashlib.sha256(b"").hexdigest() not in {r["entry_hash"] for r in rows}


def test_export_needs_the_view_permission():
    make_merchant("Shop")
    client = Client()
    client.force_login(make_staff("support.view_supportcase"))
    assert client.get(reverse("admin:support_auditentry_export")).status_code == 403


def test_the_export_rehashes_to_the_chain_outside_the_gateway():
    """A reader of the CSV recomputes every entry's hash from the documented canonical form
    (docs/SUPPORT.md, "Audit log"), removing the one apostrophe the export adds to formula-like cells."""
    import json

    from gateway.csvexport import cell_original

    shop = make_merchant("Shop")
    at_whole_second = timezone.now().replace(microsecond=0)
    audit_record(
        actor="ann", action="case.note", now=at_whole_second, merchant_id=shop.pk, reason="-1 day refund"
    )
    audit_record(actor="'quoted", action="case.note", now=timezone.now(), merchant_id=shop.pk, reason="=1+1")
    audit_record(actor="bob", action="x", now=timezone.now(), before={"a": [1, "é"]}, after=None)
    client = Client()
    client.force_login(make_staff("support.view_auditentry", merchants=[shop]))
    previous = "0" * 64
    for row in export(client):
        fields = {k: cell_original(row[k]) for k in row if k not in ("previous_hash", "entry_hash")}
        fields["sequence"] = int(fields["sequence"])
        for k in ("before", "after"):
            fields[k] = json.loads(fields[k]) if fields[k] else None
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert row["previous_hash"] == previous
        assert hashlib.sha256(previous.encode() + b"\n" + canonical).hexdigest() == row["entry_hash"]
        previous = row["entry_hash"]


def test_filters_the_list_cannot_apply_send_the_export_back_to_the_list():
    make_merchant("Shop")
    client = Client()
    client.force_login(make_staff("support.view_auditentry"))
    for query in ("?bogus=1", "?sequence__gt=abc"):
        response = client.get(reverse("admin:support_auditentry_export") + query)
        assert response.status_code == 302 and response["Location"].endswith("?e=1"), query


def test_staff_of_one_merchant_do_not_read_the_grants_of_another_merchants_staff():
    from django.contrib.auth.models import User

    from support.roles import role_grant

    shop, other = make_merchant("Shop"), make_merchant("Other", account=1)
    role_grant(user=User.objects.create_user("ours"), role="support_lead", merchant_ids=[shop.pk], actor="t")
    role_grant(
        user=User.objects.create_user("theirs"), role="support_lead", merchant_ids=[other.pk], actor="t"
    )
    role_grant(
        user=User.objects.create_user("both"), role="auditor", merchant_ids=[shop.pk, other.pk], actor="t"
    )
    audit_record(
        actor="root",
        action="config.change",
        now=timezone.now(),
        object_type="payments.network",
        object_id="1",
    )
    client = Client()
    client.force_login(make_staff("support.view_auditentry", merchants=[shop]))
    rows = export(client)
    seen = [(r["action"], r["object_id"]) for r in rows]
    ours = User.objects.get(username="ours").pk
    assert seen == [("role.granted", str(ours)), ("config.change", "1")]

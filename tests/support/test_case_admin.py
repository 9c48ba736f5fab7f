"""Working a case in the admin: assign, change status, add a note (forms on the case page, each through a
case service, audited), the list actions, and the refusals: a view-only user sees no forms and a forged
POST is a 403; another merchant's case is a 404."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from support.models import AuditEntry, CaseNote, SupportCase
from tests.factories import make_merchant, make_staff

pytestmark = pytest.mark.django_db

AGENT = ("view_supportcase", "change_supportcase")
URL = "/admin/support/supportcase/"


def open_case(merchant, key: str, *, due_in=timedelta(hours=4), status="open") -> SupportCase:
    now = timezone.now()
    return SupportCase.objects.create(
        kind="late_payment",
        status=status,
        merchant=merchant,
        dedupe_key=key,
        opened_at=now,
        due_by=now + due_in,
    )


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def said(response) -> list[str]:
    """The messages shown on the page a form's POST led to (posted with follow=True)."""
    assert response.redirect_chain and response.redirect_chain[-1][1] == 302
    return [m.message for m in response.context["messages"]]


def audit(case: SupportCase, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(object_type="support_case", object_id=str(case.pk), action=action))


@pytest.fixture
def shops():
    return make_merchant("Own shop", account=0), make_merchant("Other shop", account=1)


@pytest.fixture
def agent(shops):
    return make_staff(*AGENT, merchants=[shops[0]], username="agent")


def test_the_case_page_offers_the_forms_and_no_dead_buttons(shops, agent):
    own, other = shops
    colleague = make_staff(*AGENT, merchants=[own], username="colleague")
    make_staff(*AGENT, merchants=[other], username="elsewhere")  # does not see this merchant
    make_staff("view_supportcase", merchants=[own], username="looker")  # may not work cases
    gone = make_staff(*AGENT, merchants=[own], username="gone")
    User.objects.filter(pk=gone.pk).update(is_active=False)
    case = open_case(own, "c1")
    page = client_for(agent).get(f"{URL}{case.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="case-assign"' in html and 'id="case-status"' in html and 'id="case-note"' in html
    assert 'name="_save"' not in html and 'name="_continue"' not in html and "deletelink" not in html
    offered = list(page.context["case_forms"]["assign"].fields["assignee"].queryset)
    assert offered == [agent, colleague]


def test_an_agent_assigns_changes_status_and_adds_notes_each_audited(shops, agent):
    own, _ = shops
    colleague = make_staff(*AGENT, merchants=[own], username="colleague")
    case = open_case(own, "c1")
    client = client_for(agent)

    response = client.post(
        f"{URL}{case.pk}/assign/", {"assignee": colleague.pk, "note": "yours"}, follow=True
    )
    assert response.redirect_chain == [(f"{URL}{case.pk}/change/", 302)]
    case.refresh_from_db()
    assert case.assignee == colleague and case.status == "in_progress"
    assert said(response) == [f"case {case.pk} assigned to colleague"]
    [entry] = audit(case, "case.assign")
    assert entry.actor == "agent" and entry.merchant_id == own.pk and entry.reason == "yours"
    assert entry.before == {"assignee": None, "status": "open"}
    assert entry.after == {"assignee": "colleague", "status": "in_progress"}

    response = client.post(f"{URL}{case.pk}/status/", {"status": "resolved", "note": ""}, follow=True)
    case.refresh_from_db()
    assert case.status == "in_progress" and not audit(case, "case.status")
    assert "say how the case was resolved" in said(response)[0]

    response = client.post(
        f"{URL}{case.pk}/status/", {"status": "resolved", "note": "refunded on chain"}, follow=True
    )
    case.refresh_from_db()
    assert case.status == "resolved" and case.resolved_at is not None
    [entry] = audit(case, "case.status")
    assert (entry.before, entry.after, entry.reason) == (
        {"status": "in_progress"},
        {"status": "resolved"},
        "refunded on chain",
    )

    response = client.post(f"{URL}{case.pk}/note/", {"body": "customer thanked us"}, follow=True)
    assert said(response) == [f"note added to case {case.pk}"]
    assert list(CaseNote.objects.filter(case=case).values_list("author", "body")) == [
        ("agent", "refunded on chain"),
        ("agent", "customer thanked us"),
    ]
    assert len(audit(case, "case.note")) == 1
    page = client.get(f"{URL}{case.pk}/change/")
    assert "customer thanked us" in page.content.decode()


def test_a_forged_assignee_is_refused(shops, agent):
    own, other = shops
    elsewhere = make_staff(*AGENT, merchants=[other], username="elsewhere")
    case = open_case(own, "c1")
    response = client_for(agent).post(f"{URL}{case.pk}/assign/", {"assignee": elsewhere.pk}, follow=True)
    case.refresh_from_db()
    assert case.assignee is None and not audit(case, "case.assign")
    assert said(response)[0].startswith("nothing changed: assignee")


def test_a_view_only_user_sees_no_forms_and_a_post_is_403(shops):
    own, _ = shops
    looker = make_staff("view_supportcase", merchants=[own], username="looker")
    case = open_case(own, "c1")
    client = client_for(looker)
    page = client.get(f"{URL}{case.pk}/change/")
    assert page.status_code == 200 and "case_forms" not in page.context
    assert 'id="case-work"' not in page.content.decode()
    for name, data in (
        ("assign", {"assignee": looker.pk}),
        ("status", {"status": "open"}),
        ("note", {"body": "x"}),
        ("escalate", {"note": "x"}),
    ):
        assert client.post(f"{URL}{case.pk}/{name}/", data).status_code == 403, name
    listing = client.post(URL, {"action": "assign_to_me", "_selected_action": [case.pk]})
    assert listing.status_code == 403
    case.refresh_from_db()
    assert case.assignee is None and case.status == "open"
    assert not CaseNote.objects.exists() and not AuditEntry.objects.exists()


def test_another_merchants_case_is_a_404(shops, agent):
    _, other = shops
    case = open_case(other, "x1")
    client = client_for(agent)
    assert client.get(f"{URL}{case.pk}/change/").status_code == 404
    for name, data in (
        ("assign", {"assignee": agent.pk}),
        ("status", {"status": "open"}),
        ("note", {"body": "x"}),
        ("escalate", {"note": "x"}),
    ):
        assert client.post(f"{URL}{case.pk}/{name}/", data).status_code == 404, name
    assert client.post(f"{URL}999999/note/", {"body": "x"}).status_code == 404
    assert client.post(URL, {"action": "assign_to_me", "_selected_action": [case.pk]}).status_code == 403
    assert not AuditEntry.objects.exists()


def test_the_forms_answer_only_posts(shops, agent):
    case = open_case(shops[0], "c1")
    assert client_for(agent).get(f"{URL}{case.pk}/note/").status_code == 405


def test_list_actions_assign_to_me_and_mark_in_progress(shops, agent):
    own, _ = shops
    first, second = open_case(own, "c1"), open_case(own, "c2", status="waiting_on_customer")
    done = open_case(own, "c3", status="resolved")
    client = client_for(agent)
    response = client.post(URL, {"action": "assign_to_me", "_selected_action": [first.pk]}, follow=True)
    assert said(response) == ["1 case(s) assigned to you"]
    first.refresh_from_db()
    assert first.assignee == agent and first.status == "in_progress"
    response = client.post(
        URL, {"action": "mark_in_progress", "_selected_action": [second.pk, done.pk]}, follow=True
    )
    second.refresh_from_db()
    done.refresh_from_db()
    assert (second.status, done.status) == ("in_progress", "resolved")
    assert said(response) == [
        "1 case(s) marked in progress",
        f"left as they are (resolved; reopen one from its page): {done.pk}",
    ]
    assert [e.action for e in AuditEntry.objects.order_by("sequence")] == ["case.assign", "case.status"]


def test_case_list_filters(shops, agent):
    own, other = shops
    overdue = open_case(own, "late", due_in=-timedelta(hours=1))
    assigned = open_case(own, "mine")
    resolved = open_case(own, "done", status="resolved", due_in=-timedelta(hours=1))
    SupportCase.objects.filter(pk=assigned.pk).update(assignee=agent)
    open_case(other, "theirs", due_in=-timedelta(hours=1))
    client = client_for(agent)

    def listed(query: str) -> set[int]:
        page = client.get(f"{URL}?{query}")
        assert page.status_code == 200, query
        return {case.pk for case in page.context["cl"].result_list}

    assert listed("") == {overdue.pk, assigned.pk, resolved.pk}
    assert listed("due=overdue") == {overdue.pk}
    assert listed("status=unresolved") == {overdue.pk, assigned.pk}
    assert listed("status=resolved") == {resolved.pk}
    assert listed("assignee=none") == {overdue.pk, resolved.pk}
    assert listed(f"assignee={agent.pk}") == {assigned.pk}
    assert listed("kind=late_payment") == {overdue.pk, assigned.pk, resolved.pk}
    assert listed(f"merchant__id__exact={own.pk}") == {overdue.pk, assigned.pk, resolved.pk}
    page = client.get(URL).content.decode()
    assert "Other shop" not in page  # the merchant filter offers the user's merchants only


# --- The matrix: every role x every case action x own and other merchant, as `grant_role` makes staff. --

ROLES = ("support_agent", "support_lead", "finance", "merchant_admin", "auditor")
CASE_WORKERS = {"support_agent", "support_lead"}  # docs/SUPPORT.md "Roles": they work cases
CASE_ACTS = {
    "assign": lambda case, user: (f"{URL}{case.pk}/assign/", {"assignee": user.pk}),
    "status": lambda case, user: (f"{URL}{case.pk}/status/", {"status": "waiting_on_customer"}),
    "note": lambda case, user: (f"{URL}{case.pk}/note/", {"body": "called the customer"}),
    "escalate": lambda case, user: (
        f"{URL}{case.pk}/escalate/",
        {"note": "the merchant asks for a decision"},
    ),
    "assign to me": lambda case, user: (URL, {"action": "assign_to_me", "_selected_action": [case.pk]}),
    "mark in progress": lambda case, user: (
        URL,
        {"action": "mark_in_progress", "_selected_action": [case.pk]},
    ),
}


def cases_state() -> list:
    return [
        list(SupportCase.objects.order_by("pk").values()),
        list(CaseNote.objects.order_by("pk").values()),
        AuditEntry.objects.filter(object_type="support_case").count(),
    ]


@pytest.mark.parametrize("side", ("own", "other"))
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(CASE_ACTS))
def test_role_works_cases_of_its_own_merchant_only(shops, name, role, side, monkeypatch):
    from tests.support.test_permission_matrix import staff

    own, other = shops
    client = staff(role, own, monkeypatch)
    user = User.objects.get(username=f"{role}-user")
    case = open_case(own if side == "own" else other, "c1")
    url, data = CASE_ACTS[name](case, user)
    before = cases_state()

    response = client.post(url, data)

    if role in CASE_WORKERS and side == "own":
        assert response.status_code == 302, response.status_code
        assert cases_state() != before, "the action did its work"
        assert AuditEntry.objects.filter(actor=user.username, object_id=str(case.pk)).exists()
    else:
        assert response.status_code in (403, 404), response.status_code
        if name in (
            "assign",
            "status",
            "note",
            "escalate",
        ):  # a case page's form: another merchant's case is not found
            assert response.status_code == (404 if side == "other" else 403)
        assert cases_state() == before, "a refused action changes nothing"


def test_an_agent_escalates_a_case_once_with_a_note_for_the_lead(shops, agent):
    case = open_case(shops[0], "c1")
    client = client_for(agent)
    assert 'id="case-escalate"' in client.get(f"{URL}{case.pk}/change/").content.decode()
    empty = client.post(f"{URL}{case.pk}/escalate/", {"note": "  "}, follow=True)
    assert any("nothing changed" in m for m in said(empty))
    done = client.post(f"{URL}{case.pk}/escalate/", {"note": "Merchant wants it accepted."}, follow=True)
    assert said(done) == [f"case {case.pk} escalated to the support leads"]
    case.refresh_from_db()
    assert (case.escalated_by, case.status) == (agent, "in_progress")
    assert list(case.notes.values_list("body", flat=True)) == ["Merchant wants it accepted."]
    (entry,) = audit(case, "case.escalate")
    assert (
        entry.before == {"escalated_at": None, "status": "open"}
        and entry.reason == "Merchant wants it accepted."
    )
    page = client.get(f"{URL}{case.pk}/change/").content.decode()
    assert 'id="case-escalate"' not in page and 'id="case-escalated"' in page
    again = client.post(f"{URL}{case.pk}/escalate/", {"note": "again"}, follow=True)
    assert any("case_already_escalated" in m for m in said(again))
    assert client.get(f"{URL}?escalated=yes").context["cl"].result_count == 1


def test_an_assignee_filter_value_that_is_no_user_id_lists_every_case(shops, agent):
    open_case(shops[0], "c1")
    response = client_for(agent).get(f"{URL}?assignee=%C2%B2")  # a superscript two: a digit, not 0-9
    assert response.status_code == 200 and response.context["cl"].result_count == 1


def test_a_note_longer_than_people_read_changes_nothing(shops, agent):
    case = open_case(shops[0], "c1")
    client = client_for(agent)
    for name, data in (("note", {"body": "x" * 4001}), ("escalate", {"note": "x" * 4001})):
        response = client.post(f"{URL}{case.pk}/{name}/", data, follow=True)
        assert any("note_too_long" in m for m in said(response)), name
    assert not CaseNote.objects.exists() and not AuditEntry.objects.exists()

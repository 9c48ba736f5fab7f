"""Date-range filters on the payment list: created time (a column) and paid time (the first transition to
paid, no column). Both days of a range are included whole; a bad date is the admin's ?e=1."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from payments.models import PaymentIntent, StateTransition
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db
URL = "/admin/payments/paymentintent/"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def intent(merchant, created: str, *paid: str) -> str:
    made = new_intent(merchant)
    PaymentIntent.objects.filter(pk=made.pk).update(created_at=at(created))
    for n, time in enumerate(paid):
        row = StateTransition.objects.create(
            intent=made, from_state="confirming", to_state="paid", cause=f"t{n}", reason="", verdict={}
        )
        StateTransition.objects.filter(pk=row.pk).update(created_at=at(time))
    return made.pk


@pytest.fixture
def three():
    merchant = make_merchant()
    x = intent(merchant, "2026-01-10 12:00", "2026-01-13 09:00", "2026-01-15 09:00")
    y = intent(merchant, "2026-01-11 23:30", "2026-01-14 23:59:59")
    z = intent(merchant, "2026-01-12 00:30")
    return x, y, z


def listed(client, query: str) -> set[str]:
    page = client.get(f"{URL}?{query}")
    assert page.status_code == 200, (query, page.get("Location"))
    return {row.pk for row in page.context["cl"].result_list}


def test_created_range_includes_both_days_whole(admin_client, three):
    x, y, z = three
    assert listed(admin_client, "created_at__from=2026-01-10&created_at__to=2026-01-11") == {x, y}
    assert listed(admin_client, "created_at__from=2026-01-12") == {z}
    assert listed(admin_client, "created_at__to=2026-01-10") == {x}
    assert listed(admin_client, "") == {x, y, z}


def test_paid_range_filters_on_the_first_transition_to_paid(admin_client, three):
    x, y, _ = three
    # x was paid again on the 15th, but first on the 13th
    assert listed(admin_client, "paid_at__from=2026-01-14&paid_at__to=2026-01-15") == {y}
    assert listed(admin_client, "paid_at__to=2026-01-13") == {x}
    assert listed(admin_client, "paid_at__from=2026-01-13") == {x, y}


def test_bad_or_reversed_dates_are_the_admins_error_page(admin_client, three):
    for query in ("created_at__from=yesterday", "paid_at__from=2026-01-15&paid_at__to=2026-01-14"):
        page = admin_client.get(f"{URL}?{query}")
        assert page.status_code == 302 and page["Location"].endswith("?e=1"), query


def test_the_range_form_keeps_the_pages_other_parameters(admin_client, three):
    html = admin_client.get(
        f"{URL}?state__exact=awaiting_payment&q=x&created_at__from=2026-01-10"
    ).content.decode()
    assert '<input type="hidden" name="state__exact" value="awaiting_payment">' in html
    assert '<input type="hidden" name="q" value="x">' in html
    assert '<input type="date" name="created_at__from" value="2026-01-10">' in html
    assert '<input type="date" name="paid_at__to" value="">' in html
    assert "By paid time" in html

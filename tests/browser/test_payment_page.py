"""The payment page in headless Chromium, as a support agent who logs in through the admin's own form:
the story in the asset's units, the explorer link, nothing to save or delete; screenshots saved as test
artifacts (.state/artifacts/console)."""

from __future__ import annotations

import pytest

from tests.browser.test_checkout import snapshots
from tests.factories import make_staff
from tests.support.test_payment_page import PAID_TX, READER, receiver, story  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_webhooks")]


def test_an_agent_reads_a_payment_page(story, live_server, page, artifacts):  # noqa: F811
    make_staff(*READER, username="agent")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "agent")
    page.fill("#id_password", "x")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/payments/paymentintent/{story.pk}/change/")
    assert page.inner_text("#payment-amounts").count("12.500000 USDC") == 3  # due, seen, confirmed
    assert page.get_attribute(f"#payment-transactions a[href$='{PAID_TX}']", "href") == (
        f"https://etherscan.io/tx/{PAID_TX}"
    )
    assert "agrees with the stored payment" in page.inner_text("#check-now")
    assert page.locator("#content-main input[type=submit], #content-main button").count() == 0
    shots = artifacts.parent / "console"
    shots.mkdir(parents=True, exist_ok=True)
    snapshots(page, shots, "payment-page")

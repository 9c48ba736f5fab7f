"""Refunds asked for by support from the payment page (issue 13), through the test client as people with
only their permissions: a lead refunds at once or through a second lead's approval (the merchant's
policy), an amount beyond what was received is refused with nothing written, and the payment page shows
the refund (with what the merchant's wallet is to pay) and the settlements that moved the payment's funds."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from payments import services
from payments.chains.base import Destination, Spend
from payments.models import Event, PaymentIntent, Refund
from support.approvals import approval_decide
from support.models import ApprovalRequest, AuditEntry, MerchantPolicy
from tests.factories import make_merchant, make_staff
from tests.payments.test_services_settle import block, new_intent, transfer
from tests.support.test_dangerous_admin import LEAD, action_url, client_for, one_lead_decides, page

pytestmark = pytest.mark.django_db

REASON = "The customer sent the goods back; parcel received on Monday, ticket 4411."
CUSTOMER = "0x" + "ab" * 20


def paid_intent(merchant) -> PaymentIntent:
    now = timezone.now()
    intent = new_intent(merchant, amount="10")
    services.observation_record(transfer=transfer(intent, tx="0xpaid", **block(100, now)), now=now)
    services.chain_tip_record(network_code="ethereum", height=200, block_hash="0xtip", now=now)
    intent = PaymentIntent.objects.get(pk=intent.pk)
    assert intent.state == "paid"
    return intent


def test_a_lead_refunds_at_once_and_the_payment_page_shows_it():
    shop = make_merchant("Shop")
    one_lead_decides(shop)
    intent = paid_intent(shop)
    lead: Client = client_for(make_staff(*LEAD, username="lead"))
    assert action_url(intent, "refund") in page(lead, intent)
    form = lead.get(action_url(intent, "refund")).content.decode()
    assert "applies at once" in form and "10.000000 USDC / 10.000000 USDC" in form  # received / refundable

    response = lead.post(
        action_url(intent, "refund"),
        {"amount_kind": "custom", "value": "4", "currency": "", "destination": CUSTOMER, "reason": REASON},
    )
    assert response.status_code == 302, response.content.decode()[-1500:]
    refund = Refund.objects.get()
    assert (refund.state, int(refund.amount_base_units), refund.destination) == (
        "awaiting_payment",
        4_000_000,
        CUSTOMER,
    )
    assert (refund.requested_by, refund.approved_by, refund.reason) == ("user:lead", "user:lead", REASON)
    entry = AuditEntry.objects.get(action="payment.refund")
    assert entry.actor == "lead" and entry.after["refund"] == refund.pk
    assert list(
        Event.objects.filter(intent=intent, type__startswith="refund.").values_list("type", flat=True)
    ) == [
        "refund.created",
        "refund.approved",
    ]
    body = page(lead, intent)
    assert refund.pk in body and "4.000000 USDC" in body
    assert 'class="refund-qr" src="data:image/svg+xml' in body  # the QR code of what the wallet pays
    assert (
        "/transfer?address=0xABaBaB" in body or "/transfer?address=0xabab" in body.lower()
    )  # the EIP-681 URI

    # More than what is left (6 USDC) is refused on the form; nothing is written.
    before = (Refund.objects.count(), AuditEntry.objects.count(), ApprovalRequest.objects.count())
    response = lead.post(
        action_url(intent, "refund"),
        {"amount_kind": "custom", "value": "6.5", "currency": "", "destination": "", "reason": REASON},
    )
    assert response.status_code == 400 and "refund_exceeds_received" in response.content.decode()
    assert (Refund.objects.count(), AuditEntry.objects.count(), ApprovalRequest.objects.count()) == before


def test_four_eyes_a_second_lead_approves_then_the_refund_is_made():
    shop = make_merchant("Shop")  # default policy: decisions on payments need a second lead
    intent = paid_intent(shop)
    maker = make_staff(*LEAD, username="maker")
    response = client_for(maker).post(
        action_url(intent, "refund"),
        {"amount_kind": "received", "value": "", "currency": "", "destination": "", "reason": REASON},
    )
    assert response.status_code == 302
    approval = ApprovalRequest.objects.get(action="payment.refund", status="pending")
    assert not Refund.objects.exists()
    checker = make_staff(*LEAD, username="checker")
    approval = approval_decide(actor=checker, approval_id=approval.pk, approve=True, now=timezone.now())
    assert approval.status == "approved", approval.result
    refund = Refund.objects.get()
    # No address yet: the refund waits for the customer's, from the refund page's link.
    assert (refund.state, refund.requested_by, int(refund.amount_base_units)) == (
        "approved",
        "user:maker",
        10_000_000,
    )


def test_an_outflow_of_the_payment_shows_as_a_settlement_on_its_page():
    shop = make_merchant("Shop")
    intent = paid_intent(shop)
    now = timezone.now()
    outflow = services.outflow_record(
        spend=Spend(
            "ethereum",
            "0xsweep",
            3,
            intent.address.address,
            10_000_000,
            token_contract=intent.network_asset.contract_address,
            destinations=(
                Destination(3, "0x" + "cd" * 20, 10_000_000, intent.network_asset.contract_address),
            ),
            fee_base_units=21_000 * 10**9,
            fee_payer=intent.address.address,
            block_height=150,
            block_hash="0xb150",
            block_time=now,
            position_in_block=0,
        ),
        now=now,
    )
    services.settlements_derive(transaction_ids=[outflow.transaction_id], now=now)
    body = page(client_for(make_staff(*LEAD, username="lead")), intent)
    assert 'id="payment-settlements"' in body and "unknown outflow" in body and "0xsweep" in body
    section = body[body.index('id="payment-settlements"') :]
    section = section[: section.index("</div>")]
    # What moved, its share of the gas (exact, in ETH), its fiat value at the peg.
    assert "10.000000 USDC" in section and "0.000021000000000000 ETH" in section and "10.00 USD" in section


def test_a_lead_corrects_a_refunds_address_then_cancels_it():
    shop = make_merchant("Shop")
    one_lead_decides(shop)
    intent = paid_intent(shop)
    refund = services.refund_create(
        intent_id=intent.pk,
        amount_kind="custom",
        value="3",
        reason=REASON,
        requested_by="test",
        approved=True,
        destination=CUSTOMER,
        now=timezone.now(),
    )
    lead = client_for(make_staff(*LEAD, username="lead"))
    assert action_url(intent, "change_refund") in page(lead, intent)
    corrected = "0x" + "cd" * 20
    response = lead.post(
        action_url(intent, "change_refund"),
        {
            "refund": refund.pk,
            "destination": corrected,
            "reason": "The customer confirmed a new address by phone.",
        },
    )
    assert response.status_code == 302, response.content.decode()[-1500:]
    refund.refresh_from_db()
    assert (refund.destination, refund.destination_set_by) == (corrected, "user:lead")
    # Not an address of the network: refused on the form, nothing changed.
    response = lead.post(
        action_url(intent, "change_refund"),
        {
            "refund": refund.pk,
            "destination": "not an address",
            "reason": "The customer confirmed a new address.",
        },
    )
    assert response.status_code == 400 and "invalid_address" in response.content.decode()
    response = lead.post(
        action_url(intent, "change_refund"),
        {"refund": refund.pk, "cancel": "on", "reason": "The merchant refunded by bank transfer instead."},
    )
    assert response.status_code == 302
    refund.refresh_from_db()
    assert (refund.state, refund.canceled_by) == ("canceled", "user:lead")
    assert "refund.canceled" in list(intent.events.values_list("type", flat=True))
    assert action_url(intent, "change_refund") not in page(lead, intent)  # nothing left to change


def test_four_eyes_above_an_amount_weighs_what_the_refund_moves_not_the_order_price():
    """A 10 USDC order overpaid with 500 USDC: refunding everything moves 500, above the policy's 100,
    so it needs a second lead although the order itself is below; a 5 USDC refund does not."""
    shop = make_merchant("Shop")
    MerchantPolicy.objects.create(
        merchant=shop,
        four_eyes="above_amount",
        threshold_amount=100,
        threshold_currency="USDC",
        updated_at=timezone.now(),
    )
    now = timezone.now()
    intent = new_intent(shop, amount="10")
    services.observation_record(
        transfer=transfer(intent, tx="0xbig", amount=500_000_000, **block(100, now)), now=now
    )
    lead = client_for(make_staff(*LEAD, username="lead"))
    small = lead.post(
        action_url(intent, "refund"),
        {"amount_kind": "custom", "value": "5", "currency": "", "destination": CUSTOMER, "reason": REASON},
    )
    assert small.status_code == 302 and Refund.objects.count() == 1  # applied at once
    everything = lead.post(
        action_url(intent, "refund"),
        {"amount_kind": "received", "value": "", "currency": "", "destination": CUSTOMER, "reason": REASON},
    )
    assert everything.status_code == 302
    assert Refund.objects.count() == 1  # not made: it waits for a second lead
    approval = ApprovalRequest.objects.get(action="payment.refund", status="pending")
    assert approval.payload["amount_base_units"] == "495000000"

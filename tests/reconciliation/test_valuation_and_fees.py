"""The value of a payment at the rate when it was paid (read from the event stream, priced outside any lock,
retried while the source is down) and the operator's service fee, in the reconciliation's rows. Expected
figures are worked by hand from the prices and rates in the test."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from payments import services
from payments.models import NetworkAsset
from payments.webhooks.delivery import events_dispatch
from reconciliation.models import PaidValuation, ServiceFeeSchedule
from reconciliation.tasks import value_paid_payments
from tests.factories import make_merchant
from tests.ledger import NETWORK, ltc_intent, paid, reconciled

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fixed_rates(settings):
    settings.GATEWAY_RATE_SOURCE = "fixed"
    settings.GATEWAY_FIXED_RATES = "LTC-USD=80"


def usd_intent(merchant, price: str):
    na = NetworkAsset.objects.get(asset__code="LTC", network__code=NETWORK)
    data = services.IntentInput(price_amount=Decimal(price), price_currency="USD", network_asset=na)
    return services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())


def pay_and_value(intent, tx_hash: str) -> None:
    paid(intent, tx_hash)
    services.chain_tip_record(network_code=NETWORK, height=20, block_hash="b20", now=timezone.now())
    events_dispatch(now=timezone.now())
    value_paid_payments()


def row(merchant, intent) -> dict:
    return reconciled(merchant)[intent.pk]


def test_a_payment_in_ltc_is_valued_in_usd_at_the_rate_when_paid():
    merchant = make_merchant()
    intent = ltc_intent(merchant)  # 0.5 LTC
    pay_and_value(intent, "a1" * 32)
    r = row(merchant, intent)
    assert r["state"] == "paid"
    # 0.5 LTC x 80 USD/LTC = 40.00 USD
    assert (r["paid_value_currency"], r["paid_rate"], r["paid_rate_source"]) == ("USD", "80", "fixed")
    assert r["fiat_value_when_paid"] == "40.00" and r["paid_rate_time"]
    assert (r["service_fee"], r["service_fee_currency"]) == ("0", None)  # no schedule: zero


def test_a_source_down_leaves_it_unpriced_and_the_next_round_prices_it(settings):
    settings.GATEWAY_FIXED_RATES = "BTC-USD=60000"  # nothing for LTC
    merchant = make_merchant()
    intent = ltc_intent(merchant)
    pay_and_value(intent, "a1" * 32)
    valuation = PaidValuation.objects.get(pk=intent.pk)
    assert (valuation.rate, valuation.attempts) == (None, 1) and "LTC-USD" in valuation.last_error
    assert row(merchant, intent)["fiat_value_when_paid"] is None
    settings.GATEWAY_FIXED_RATES = "LTC-USD=81.5"
    assert value_paid_payments() == 1
    assert row(merchant, intent)["fiat_value_when_paid"] == "40.75"  # 0.5 x 81.5
    assert value_paid_payments() == 0  # read once: the cursor moved on


def test_the_service_fee_follows_the_schedule_valid_when_paid():
    merchant = make_merchant()
    now = timezone.now()
    ServiceFeeSchedule.objects.create(
        merchant=merchant, valid_from=now - timedelta(days=30), currency="USD", percent_bps=100
    )
    ServiceFeeSchedule.objects.create(
        merchant=merchant,
        valid_from=now - timedelta(days=1),
        currency="USD",
        percent_bps=150,
        fixed_amount="0.30",
    )
    ServiceFeeSchedule.objects.create(
        merchant=merchant, valid_from=now + timedelta(days=1), currency="USD", percent_bps=9_000
    )
    priced_in_usd, priced_in_ltc, unpaid = (
        usd_intent(merchant, "25.00"),
        ltc_intent(merchant),
        ltc_intent(merchant),
    )
    pay_and_value(priced_in_usd, "a1" * 32)
    pay_and_value(priced_in_ltc, "a2" * 32)
    # 25.00 x 1.5% + 0.30 = 0.675 -> 0.68 (half up)
    assert (
        row(merchant, priced_in_usd)["service_fee"],
        row(merchant, priced_in_usd)["service_fee_currency"],
    ) == (
        "0.68",
        "USD",
    )
    # valued 40.00 USD when paid: 40.00 x 1.5% + 0.30 = 0.90
    assert row(merchant, priced_in_ltc)["service_fee"] == "0.90"
    assert row(merchant, unpaid)["service_fee"] == "0"  # nothing paid, nothing billed


def test_a_fee_is_on_the_price_even_when_the_rate_moved_before_it_was_paid(settings):
    merchant = make_merchant()
    ServiceFeeSchedule.objects.create(
        merchant=merchant, valid_from=timezone.now() - timedelta(days=1), currency="USD", percent_bps=150
    )
    intent = usd_intent(merchant, "25.00")  # quoted at 80 USD/LTC: 0.3125 LTC
    settings.GATEWAY_FIXED_RATES = "LTC-USD=100"  # LTC rose before it was paid
    pay_and_value(intent, "a1" * 32)
    r = row(merchant, intent)
    assert r["fiat_value_when_paid"] == "31.25"  # 0.3125 x 100
    assert r["service_fee"] == "0.38"  # on the price: 25.00 x 1.5% = 0.375, not on the value when paid


def test_a_payment_the_source_could_not_value_in_time_stays_unvalued(settings):
    settings.GATEWAY_FIXED_RATES = "BTC-USD=60000"  # nothing for LTC
    merchant = make_merchant()
    intent = ltc_intent(merchant)
    pay_and_value(intent, "a1" * 32)
    PaidValuation.objects.filter(pk=intent.pk).update(paid_at=timezone.now() - timedelta(hours=2))
    settings.GATEWAY_FIXED_RATES = "LTC-USD=81.5"  # back, but two hours later: not the rate when paid
    assert value_paid_payments() == 0
    valuation = PaidValuation.objects.get(pk=intent.pk)
    assert valuation.rate is None and valuation.last_error.startswith("not valued: no rate within 3600 s")
    assert row(merchant, intent)["fiat_value_when_paid"] is None


def test_a_schedule_in_another_currency_than_the_payment_leaves_the_fee_empty():
    merchant = make_merchant()
    ServiceFeeSchedule.objects.create(
        merchant=merchant, valid_from=timezone.now() - timedelta(days=1), currency="EUR", percent_bps=100
    )
    intent = usd_intent(merchant, "25.00")
    pay_and_value(intent, "a1" * 32)
    r = row(merchant, intent)
    assert (r["service_fee"], r["service_fee_currency"]) == (None, "EUR")

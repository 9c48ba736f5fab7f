"""Rates and quotes (payments/pricing.py): the HTTP ticker source against a local server speaking
Coinbase's spot-price shape, quote arithmetic, base-unit conversions, and the API using the ticker."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.errors import RateUnavailable
from payments.models import PaymentIntent, Quote
from payments.pricing import (
    FixedRateSource,
    HttpTickerRateSource,
    PegRateSource,
    Rate,
    format_amount,
    format_amount_for_display,
    from_base_units,
    quote,
    to_base_units,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SPOT_PATH = "/v2/prices/BTC-USD/spot"


def spot(amount: str, base: str = "BTC", currency: str = "USD") -> bytes:
    return json.dumps({"data": {"amount": amount, "base": base, "currency": currency}}).encode()


# --- a local ticker server -------------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    delay_s: float = 0.0


@dataclass
class Ticker:
    """A local HTTP server; `routes` maps a path to its Answer (unknown paths get 404)."""

    url: str
    routes: dict[str, Answer] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, path: str = SPOT_PATH, *, status: int = 200, body: bytes = b"", delay_s: float = 0.0):
        self.routes[path] = Answer(status, body, delay_s)


class _Handler(BaseHTTPRequestHandler):
    ticker: Ticker  # set on a subclass per server

    def do_GET(self):
        self.ticker.requests.append(self.path)
        answer = self.ticker.routes.get(self.path, Answer(404, b'{"errors":[{"id":"not_found"}]}'))
        if answer.delay_s:
            self.ticker.release.wait(answer.delay_s)  # woken at teardown
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def ticker() -> Iterator[Ticker]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    host, port = server.server_address[:2]
    handler.ticker = state = Ticker(url=f"http://{host}:{port}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- HttpTickerRateSource --------------------------------------------------------------------------


def test_ticker_rate_source_reads_coinbase_spot_shape(ticker):
    ticker.answer(body=spot("60000.00"))
    rate = HttpTickerRateSource(ticker.url + "/", timeout_s=2).rate(asset="BTC", currency="USD", now=NOW)
    assert rate == Rate("BTC", "USD", Decimal("60000.00"), f"coinbase:{ticker.url}{SPOT_PATH}", NOW)
    assert ticker.requests == [SPOT_PATH]


def test_ticker_source_name_is_in_the_source_string(ticker):
    ticker.answer("/v2/prices/ETH-EUR/spot", body=spot("2500.5", "ETH", "EUR"))
    source = HttpTickerRateSource(ticker.url, name="mirror")
    rate = source.rate(asset="ETH", currency="EUR", now=NOW)
    assert rate.rate == Decimal("2500.5")
    assert rate.source == f"mirror:{ticker.url}/v2/prices/ETH-EUR/spot"


def test_ticker_accepts_a_json_number_and_an_answer_without_pair_fields(ticker):
    ticker.answer(body=b'{"data": {"amount": 60000.5}}')
    rate = HttpTickerRateSource(ticker.url).rate(asset="BTC", currency="USD", now=NOW)
    assert rate.rate == Decimal("60000.5")


@pytest.mark.parametrize(
    ("answer", "timeout_s"),
    [
        pytest.param(Answer(500, b'{"errors":[{"id":"internal"}]}'), 2, id="http-500"),
        pytest.param(Answer(404, b"{}"), 2, id="http-404"),
        pytest.param(Answer(200, spot("60000.00"), delay_s=5), 0.3, id="timeout"),
        pytest.param(Answer(200, b'{"data": {"amount": "600'), 2, id="truncated-json"),
        pytest.param(Answer(200, b"<html>rate limited</html>"), 2, id="html"),
        pytest.param(Answer(200, b""), 2, id="empty"),
        pytest.param(Answer(200, b'{"amount": "60000.00"}'), 2, id="no-data"),
        pytest.param(Answer(200, b'{"data": ["60000.00"]}'), 2, id="data-not-object"),
        pytest.param(Answer(200, b"[1, 2]"), 2, id="body-not-object"),
        pytest.param(Answer(200, b'{"data": {"base": "BTC", "currency": "USD"}}'), 2, id="no-amount"),
        pytest.param(Answer(200, spot("sixty thousand")), 2, id="amount-not-number"),
        pytest.param(Answer(200, spot("60000.00", base="ETH")), 2, id="wrong-base"),
        pytest.param(Answer(200, spot("60000.00", currency="EUR")), 2, id="wrong-currency"),
        pytest.param(Answer(200, spot("0")), 2, id="zero"),
        pytest.param(Answer(200, spot("0.00")), 2, id="zero-decimals"),
        pytest.param(Answer(200, spot("-60000.00")), 2, id="negative"),
        pytest.param(Answer(200, spot("NaN")), 2, id="nan"),
        pytest.param(Answer(200, spot("Infinity")), 2, id="infinity"),
    ],
)
def test_ticker_failures_are_rate_unavailable(ticker, answer, timeout_s):
    ticker.routes[SPOT_PATH] = answer
    source = HttpTickerRateSource(ticker.url, timeout_s=timeout_s)
    started = datetime.now(UTC)
    with pytest.raises(RateUnavailable) as exc:
        source.rate(asset="BTC", currency="USD", now=NOW)
    assert exc.value.code == "rate_unavailable"
    assert exc.value.http_status == 503
    assert datetime.now(UTC) - started < timedelta(seconds=3)  # the timeout is honoured
    assert ticker.requests == [SPOT_PATH]


def test_ticker_unreachable_is_rate_unavailable():
    # A port that was just free: nothing listens there.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()
    with pytest.raises(RateUnavailable) as exc:
        HttpTickerRateSource(f"http://127.0.0.1:{port}", timeout_s=1).rate(
            asset="BTC", currency="USD", now=NOW
        )
    assert exc.value.code == "rate_unavailable"


# --- quote -----------------------------------------------------------------------------------------


def fixed(**pairs: str) -> FixedRateSource:
    return FixedRateSource({tuple(k.split("_")): Decimal(v) for k, v in pairs.items()})


def ceil_base_units(price: str, rate: str, decimals: int) -> int:
    """Reference arithmetic with exact fractions: ceil(price / rate * 10**decimals)."""
    return math.ceil(Fraction(price) / Fraction(rate) * 10**decimals)


def test_quote_btc_rounds_up_to_the_satoshi():
    # 49 / 60000 = 0.000816666... BTC = 81666.67 sats -> 81667 (the merchant is never short).
    assert ceil_base_units("49.00", "60000", 8) == 81667
    quoted = quote(
        source=fixed(BTC_USD="60000"),
        price=Decimal("49.00"),
        currency="USD",
        asset="BTC",
        decimals=8,
        now=NOW,
        ttl=timedelta(minutes=15),
    )
    assert quoted.amount_base_units == 81667
    assert quoted.rate == Rate("BTC", "USD", Decimal("60000"), "fixed", NOW)
    assert quoted.expires_at == NOW + timedelta(minutes=15)


def test_quote_exact_division_is_not_rounded():
    # 60 / 60000 = 0.001 BTC exactly.
    quoted = quote(
        source=fixed(BTC_USD="60000"),
        price=Decimal("60"),
        currency="USD",
        asset="BTC",
        decimals=8,
        now=NOW,
        ttl=timedelta(minutes=1),
    )
    assert quoted.amount_base_units == 100000


@pytest.mark.parametrize(
    ("price", "rate", "expected"),
    [
        # 49 / 3456.78 ETH, in wei, rounded up
        ("49.00", "3456.78", 14175041512621573),
        # 49.99 / 2500 = 0.019996 ETH exactly
        ("49.99", "2500", 19996000000000000),
        # 100 / 3000 = 0.0333... ETH -> ...334
        ("100", "3000", 33333333333333334),
        # a cheap 18-decimal token: 31-32 significant digits, beyond Decimal's default precision of 28
        ("99999999.99", "0.000003", 33333333330000000000000000000000),
        ("99999999.99", "0.000007", 14285714284285714285714285714286),
        ("12345678.91", "0.0000071234", 1733116055535278097537692674847),
    ],
)
def test_quote_18_decimals_is_exact_to_the_wei(price, rate, expected):
    assert ceil_base_units(price, rate, 18) == expected
    quoted = quote(
        source=fixed(ETH_USD=rate),
        price=Decimal(price),
        currency="USD",
        asset="ETH",
        decimals=18,
        now=NOW,
        ttl=timedelta(minutes=15),
    )
    assert quoted.amount_base_units == expected


@settings(max_examples=200, deadline=None)
@given(
    price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000000"), places=2),
    rate=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=6),
    decimals=st.sampled_from([0, 2, 6, 8, 18]),
)
def test_quote_is_the_ceiling_of_the_exact_quotient(price, rate, decimals):
    quoted = quote(
        source=fixed(X_USD=str(rate)),
        price=price,
        currency="USD",
        asset="X",
        decimals=decimals,
        now=NOW,
        ttl=timedelta(0),
    )
    assert quoted.amount_base_units == ceil_base_units(str(price), str(rate), decimals)


def test_quote_propagates_rate_unavailable():
    with pytest.raises(RateUnavailable):
        quote(
            source=fixed(),
            price=Decimal("1"),
            currency="USD",
            asset="BTC",
            decimals=8,
            now=NOW,
            ttl=timedelta(minutes=1),
        )


# --- peg and fixed sources -------------------------------------------------------------------------


def test_peg_source_gives_one_for_the_peg_currency():
    source = PegRateSource({"USDC": "USD", "USDT": "USD"}, fallback=None)
    rate = source.rate(asset="USDC", currency="USD", now=NOW)
    assert rate == Rate("USDC", "USD", Decimal(1), "peg:USDC=USD", NOW)
    quoted = quote(
        source=source,
        price=Decimal("49.00"),
        currency="USD",
        asset="USDC",
        decimals=6,
        now=NOW,
        ttl=timedelta(minutes=1),
    )
    assert quoted.amount_base_units == 49_000_000


def test_peg_source_falls_back_for_other_pairs():
    source = PegRateSource({"USDC": "USD"}, fallback=fixed(USDC_EUR="0.92", BTC_USD="60000"))
    assert source.rate(asset="USDC", currency="EUR", now=NOW) == Rate(
        "USDC", "EUR", Decimal("0.92"), "fixed", NOW
    )
    assert source.rate(asset="BTC", currency="USD", now=NOW).rate == Decimal("60000")
    with pytest.raises(RateUnavailable):
        source.rate(asset="ETH", currency="USD", now=NOW)


def test_peg_source_without_fallback_is_rate_unavailable():
    with pytest.raises(RateUnavailable) as exc:
        PegRateSource({"USDC": "USD"}, fallback=None).rate(asset="USDC", currency="EUR", now=NOW)
    assert exc.value.code == "rate_unavailable"


def test_fixed_rate_source_parse():
    source = FixedRateSource.parse("BTC-USD=60000,ETH-EUR=2500")
    assert source.rates == {("BTC", "USD"): Decimal("60000"), ("ETH", "EUR"): Decimal("2500")}
    assert source.rate(asset="BTC", currency="USD", now=NOW) == Rate(
        "BTC", "USD", Decimal("60000"), "fixed", NOW
    )
    assert source.rate(asset="ETH", currency="EUR", now=NOW).rate == Decimal("2500")
    with pytest.raises(RateUnavailable) as exc:
        source.rate(asset="ETH", currency="USD", now=NOW)
    assert exc.value.code == "rate_unavailable"


def test_fixed_rate_source_parse_is_lenient_about_spacing_and_case():
    source = FixedRateSource.parse(" btc-usd = 60000.5 , ETH-EUR=2500,, ")
    assert source.rates == {("BTC", "USD"): Decimal("60000.5"), ("ETH", "EUR"): Decimal("2500")}
    assert FixedRateSource.parse("").rates == {}


@pytest.mark.parametrize(
    "text", ["BTC-USD=0", "BTC-USD=-60000", "BTC-USD=abc", "BTC-USD", "BTC=60000", "-USD=1", "BTC-USD=NaN"]
)
def test_fixed_rate_source_parse_rejects_bad_entries(text):
    with pytest.raises(ValueError):
        FixedRateSource.parse(text)


# --- base units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "decimals", "expected"),
    [
        ("0.001", 8, 100000),
        ("49.000", 6, 49000000),  # trailing zeros are not precision
        ("49.5", 6, 49500000),
        ("1E+2", 2, 10000),
        ("0", 18, 0),
        ("7", 0, 7),
        ("0.00000001", 8, 1),
        ("1.000000000000000001", 18, 10**18 + 1),
        # 40 significant digits (the price column's max_digits): must not round at 28 digits
        ("1234567890123456789012.123456789012345678", 18, 1234567890123456789012123456789012345678),
    ],
)
def test_to_base_units(amount, decimals, expected):
    assert to_base_units(Decimal(amount), decimals) == expected


@pytest.mark.parametrize(
    ("amount", "decimals"),
    [
        ("0.000000001", 8),
        ("49.0000001", 6),
        ("0.5", 0),
        ("1.0000000000000000001", 18),
        ("1234567890123456789012.1234567890123456789", 18),
    ],
)
def test_to_base_units_rejects_too_many_decimals(amount, decimals):
    with pytest.raises(ValueError):
        to_base_units(Decimal(amount), decimals)


@pytest.mark.parametrize(
    ("amount", "decimals", "expected"),
    [
        (100000, 8, "0.00100000"),
        (81667, 8, "0.00081667"),
        (49000000, 6, "49.000000"),
        (0, 8, "0.00000000"),
        (0, 18, "0.000000000000000000"),
        (1, 18, "0.000000000000000001"),
        (10**18, 18, "1.000000000000000000"),
        (5, 0, "5"),
        (0, 0, "0"),
        (12345678901234567890123456789, 18, "12345678901.234567890123456789"),
        (2**256 - 1, 18, f"{(2**256 - 1) // 10**18}.{(2**256 - 1) % 10**18:018d}"),
    ],
)
def test_format_amount_pads_to_the_decimals(amount, decimals, expected):
    assert format_amount(amount, decimals) == expected


@settings(max_examples=200, deadline=None)
@given(amount=st.integers(min_value=0, max_value=2**256 - 1), decimals=st.sampled_from([0, 2, 6, 8, 18]))
def test_base_units_round_trip(amount, decimals):
    text = format_amount(amount, decimals)
    assert len(text.partition(".")[2]) == decimals
    assert from_base_units(amount, decimals) == Decimal(text)
    assert to_base_units(Decimal(text), decimals) == amount


# --- the API quoting from the ticker ---------------------------------------------------------------

USD_BTC = {"amount": "49.00", "currency": "USD", "asset": "BTC", "network": "bitcoin"}


@pytest.mark.django_db
def test_usd_priced_btc_intent_is_quoted_from_the_ticker(api, ticker):
    ticker.answer(body=spot("60000.00"))
    with override_settings(GATEWAY_RATE_SOURCE="coinbase", GATEWAY_RATE_SOURCE_URL=ticker.url):
        response = api.post("/api/v1/payment-intents", USD_BTC, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["amount_due"] == {"value": "0.00081667", "base_units": "81667"}
    assert body["quote"]["rate"] == "60000"
    assert body["quote"]["currency"] == "USD"
    assert ticker.url in body["quote"]["source"]
    assert body["quote"]["source"] == f"coinbase:{ticker.url}{SPOT_PATH}"
    assert ticker.requests == [SPOT_PATH]
    intent = PaymentIntent.objects.get(pk=body["id"])
    assert intent.amount_due_base_units == 81667
    assert intent.quote.amount_base_units == 81667 and intent.quote.rate == Decimal("60000")


@pytest.mark.django_db
def test_ticker_failure_is_503_and_writes_nothing(api, ticker):
    ticker.answer(status=500, body=b'{"errors":[{"id":"internal_server_error"}]}')
    with override_settings(GATEWAY_RATE_SOURCE="coinbase", GATEWAY_RATE_SOURCE_URL=ticker.url):
        response = api.post("/api/v1/payment-intents", USD_BTC, format="json")
    assert response.status_code == 503, response.json()
    assert response.json()["error"]["code"] == "rate_unavailable"
    assert ticker.requests == [SPOT_PATH]
    assert not PaymentIntent.objects.exists()
    assert not Quote.objects.exists()


# --- amounts due rounded up to the asset's display precision (issue 11, item 19) ---------------------


@settings(max_examples=300, deadline=None)
@given(
    price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000000"), places=2),
    rate=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=6),
    decimals=st.sampled_from([0, 2, 6, 8, 18]),
    precision=st.integers(min_value=0, max_value=20),
)
def test_quote_rounded_to_a_display_precision_is_the_next_step_up(price, rate, decimals, precision):
    quoted = quote(
        source=fixed(X_USD=str(rate)),
        price=price,
        currency="USD",
        asset="X",
        decimals=decimals,
        now=NOW,
        ttl=timedelta(0),
        display_decimals=precision,
    )
    places = min(precision, decimals)  # never finer than the base unit
    exact = Fraction(str(price)) / Fraction(str(rate))  # whole units of the asset
    rounded = Fraction(quoted.amount_base_units, 10**decimals)
    assert rounded >= exact
    assert rounded < exact + Fraction(1, 10**places)
    assert (rounded * 10**places).denominator == 1  # at most `places` decimals


@pytest.mark.parametrize(
    ("price", "rate", "decimals", "precision", "expected"),
    [
        # 25 / 6000 = 0.0041666... ETH -> 0.00416667 ETH
        ("25", "6000", 18, 8, 4166670000000000),
        # 49 / 3456.78 = 0.014175041... ETH -> 0.01417505 ETH
        ("49.00", "3456.78", 18, 8, 14175050000000000),
        # 49.99 / 2500 = 0.019996 ETH exactly: nothing to round
        ("49.99", "2500", 18, 8, 19996000000000000),
        # 10 / 0.92 = 10.869565217... USDC -> 10.869566 USDC
        ("10", "0.92", 6, 6, 10869566),
        # a precision above the decimals is capped at them: 49 / 60000 BTC -> 81667 sat
        ("49.00", "60000", 8, 12, 81667),
    ],
)
def test_quote_with_display_precision_matches_hand_computed_amounts(
    price, rate, decimals, precision, expected
):
    quoted = quote(
        source=fixed(X_USD=rate),
        price=Decimal(price),
        currency="USD",
        asset="X",
        decimals=decimals,
        now=NOW,
        ttl=timedelta(minutes=15),
        display_decimals=precision,
    )
    assert quoted.amount_base_units == expected


@pytest.mark.django_db
def test_fiat_priced_eth_intent_is_due_in_eight_decimals_everywhere(api, settings):
    """25 USD at 6000 USD/ETH is 0.0041666... ETH: due 0.00416667 ETH (4166670000000000 wei), the same
    in the API, the quote, the event snapshot, the payment URI and the checkout page."""
    settings.GATEWAY_RATE_SOURCE = "fixed"
    settings.GATEWAY_FIXED_RATES = "ETH-USD=6000"
    response = api.post(
        "/api/v1/payment-intents",
        {"amount": "25.00", "currency": "USD", "asset": "ETH", "network": "ethereum"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["amount_due"] == {"value": "0.004166670000000000", "base_units": "4166670000000000"}
    assert body["quote"]["rate"] == "6000" and body["quote"]["rounded_to_decimals"] == 8
    assert body["payment_uri"].endswith("@1?value=4166670000000000")
    intent = PaymentIntent.objects.get(pk=body["id"])
    assert intent.amount_due_base_units == intent.quote.amount_base_units == 4166670000000000
    assert intent.events.get(type="payment.awaiting_payment").payload["amount_due"] == body["amount_due"]
    status = Client().get(f"/pay/{intent.checkout_token}/status").json()
    assert status["amount_due"] == "0.00416667"
    assert 'value="0.00416667"' in Client().get(f"/pay/{intent.checkout_token}").content.decode()


@pytest.mark.django_db
def test_fiat_priced_usdc_and_btc_keep_their_precision(api, settings):
    settings.GATEWAY_RATE_SOURCE = "fixed"
    settings.GATEWAY_FIXED_RATES = "BTC-EUR=55000,USDC-EUR=0.92"
    btc = api.post(
        "/api/v1/payment-intents",
        {"amount": "10.00", "currency": "EUR", "asset": "BTC", "network": "bitcoin"},
        format="json",
    ).json()
    # 10 / 55000 = 0.000181818... BTC -> 0.00018182 BTC
    assert btc["amount_due"] == {"value": "0.00018182", "base_units": "18182"}
    assert btc["payment_uri"].endswith("?amount=0.00018182")
    usdc = api.post(
        "/api/v1/payment-intents",
        {"amount": "10.00", "currency": "EUR", "asset": "USDC", "network": "ethereum"},
        format="json",
    ).json()
    # 10 / 0.92 = 10.8695652... USDC -> 10.869566 USDC (6 decimals)
    assert usdc["amount_due"] == {"value": "10.869566", "base_units": "10869566"}
    assert usdc["quote"]["rounded_to_decimals"] == 6


@pytest.mark.parametrize(
    ("amount", "decimals", "display_decimals", "expected"),
    [
        (4166670000000000, 18, 8, "0.00416667"),  # trailing zeros beyond the display precision go
        (250000000000000000, 18, 8, "0.25000000"),  # down to the display precision, no further
        (123456789012345678, 18, 8, "0.123456789012345678"),  # a price in ETH: no digit is dropped
        (10000000, 6, 6, "10.000000"),
        (81667, 8, 12, "0.00081667"),  # a precision above the decimals is capped
        (5, 0, 8, "5"),
    ],
)
def test_amounts_are_shown_to_the_display_precision_without_losing_digits(
    amount, decimals, display_decimals, expected
):
    assert format_amount_for_display(amount, decimals, display_decimals) == expected

"""The create's one-statement rows (payments/services/rows.py): a row written as one jsonb parameter
reads back exactly as the same instance saved by the ORM (the independent path), whatever the values."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.db import connection, models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.models import Event, NetworkAsset, Quote
from payments.services.events import event_values
from payments.services.rows import Sql, insert_cte, insert_values_cte
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)
MOMENTS = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=OFFSETS
)
# numeric(40, 18): up to 22 integer digits and 18 decimals
RATES = st.decimals(
    min_value=Decimal("-" + "9" * 22), max_value=Decimal("9" * 22), places=18, allow_nan=False
)
UINT256 = st.integers(min_value=0, max_value=2**256 - 1).map(Decimal)
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _write(*parts: tuple[str, list]) -> list:
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH " + ", ".join(sql for sql, _ in parts) + " SELECT (SELECT id FROM x)",
            [p for _, params in parts for p in params],
        )
        return cursor.fetchone()


def _columns(model: type[models.Model], pk) -> dict:
    row = model.objects.filter(pk=pk).values().get()
    row.pop("id")
    return row


@pytest.fixture
def usdc() -> NetworkAsset:
    return NetworkAsset.objects.get(asset__code="USDC", network__code="ethereum")


@EXAMPLES
@given(
    rate=RATES,
    amount=UINT256,
    rate_time=MOMENTS,
    quoted_at=MOMENTS,
    source=TEXT,
    places=st.none() | st.integers(0, 18),
)
def test_a_quote_reads_back_as_the_orm_writes_it(usdc, rate, amount, rate_time, quoted_at, source, places):
    def quote() -> Quote:
        return Quote(
            price_amount=rate,
            price_currency="USD",
            network_asset=usdc,
            rate=rate,
            source=source,
            rate_time=rate_time,
            quoted_at=quoted_at,
            expires_at=quoted_at,
            amount_base_units=amount,
            rounded_to_decimals=places,
        )

    by_orm = quote()
    by_orm.save()
    (written,) = _write(insert_cte("x", quote(), "id"))
    assert _columns(Quote, written) == _columns(Quote, by_orm.pk)
    assert _columns(Quote, written)["amount_base_units"] == amount  # exact, never through a float


@pytest.fixture
def intent():
    return new_intent()


SEQUENCES = itertools.count(10)  # the examples share one intent: each event its own sequence


@EXAMPLES
@given(payload=JSON.filter(lambda v: v is not None), type_=TEXT, created_at=MOMENTS)
def test_an_event_reads_back_as_the_orm_writes_it(intent, payload, type_, created_at):
    """(None is SQL NULL to both, which the column refuses.)"""

    def event(sequence: int) -> Event:
        return Event(
            merchant_id=intent.merchant_id,
            intent=intent,
            type=type_,
            sequence=sequence,
            dedupe_key=f"k{sequence}",
            payload=payload,
            created_at=created_at,
        )

    by_orm = event(next(SEQUENCES))
    by_orm.save()
    written = event(next(SEQUENCES))
    with connection.cursor() as cursor:
        sql, params = insert_cte("x", written, "id")
        cursor.execute(f"WITH {sql} SELECT (SELECT id FROM x)", params)
    ours, theirs = (Event.objects.filter(pk=pk).values().get() for pk in (written.pk, by_orm.pk))
    for row in (ours, theirs):
        row.pop("id"), row.pop("sequence"), row.pop("dedupe_key")
    assert ours.pop("created_at") == created_at  # the ORM sets its own (auto_now_add): ours is given
    theirs.pop("created_at")
    assert ours == theirs


def test_overrides_are_sql_and_name_a_column(intent):
    event = Event(
        merchant_id=intent.merchant_id,
        intent=intent,
        type="t",
        sequence=9,
        dedupe_key="",
        payload={},
        created_at=intent.created_at,
    )
    with pytest.raises(TypeError):
        insert_cte("x", event, dedupe_key="plain text")
    with pytest.raises(ValueError, match="no column"):
        insert_cte("x", event, no_such_column=Sql("1"))
    sql, params = insert_cte("x", event, "id", dedupe_key=Sql("'given in SQL'"))
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {sql} SELECT (SELECT id FROM x)", params)
    assert Event.objects.get(pk=event.pk).dedupe_key == "given in SQL"


def test_a_row_given_as_values_reads_back_as_the_same_instance_written(intent):
    """`insert_values_cte` (the create's events and transition, no model instance built) writes what
    `insert_cte` writes for the instance with those values."""
    values = event_values(intent, "payment.t", 7, "v7", intent.created_at) | {
        "payload": {"a": [1, "b"]},
        "transition_id": None,
    }
    instance = Event(**(values | {"id": Event._meta.pk.get_default(), "sequence": 8, "dedupe_key": "v8"}))
    _write(insert_values_cte("x", Event, values, "id"))
    _write(insert_cte("x", instance, "id"))
    ours, theirs = (Event.objects.filter(pk=pk).values().get() for pk in (values["id"], instance.pk))
    for row in (ours, theirs):
        row.pop("id"), row.pop("sequence"), row.pop("dedupe_key")
    assert ours == theirs and ours["payload"] == {"a": [1, "b"]} and ours["position"] is None


def test_a_row_given_as_values_names_every_column_it_writes_and_no_other(intent):
    values = event_values(intent, "payment.t", 9, "v9", intent.created_at) | {
        "payload": {},
        "transition_id": None,
    }
    with pytest.raises(TypeError, match="no value for 'payload'"):  # never a silent NULL
        insert_values_cte("x", Event, {k: v for k, v in values.items() if k != "payload"})
    with pytest.raises(TypeError, match="not written"):  # given twice: as a value and as SQL
        insert_values_cte("x", Event, values, payload=Sql("'{}'::jsonb"))
    with pytest.raises(TypeError, match="not written"):
        insert_values_cte("x", Event, values | {"colour": "red"})
    with pytest.raises(TypeError, match="overrides are SQL"):
        insert_values_cte("x", Event, values, dedupe_key="plain text")
    with pytest.raises(TypeError, match="not written"):  # the primary key too
        insert_values_cte("x", Event, values | {"id": "evt_x"}, id=Sql("'evt_from_sql'"))


def test_a_row_with_a_condition_is_written_only_when_it_holds(intent):
    """(The create writes every row only if its statement claimed an address.)"""
    values = event_values(intent, "payment.t", 11, "v11", intent.created_at) | {
        "payload": {},
        "transition_id": None,
    }
    with pytest.raises(TypeError, match="where is SQL"):
        insert_values_cte("x", Event, values, "id", where="FALSE")
    assert _write(insert_values_cte("x", Event, values, "id", where=Sql("1 = 2"))) == (None,)
    assert not Event.objects.filter(pk=values["id"]).exists()
    (written,) = _write(insert_values_cte("x", Event, values, "id", where=Sql("1 = 1")))
    assert written == values["id"] and Event.objects.filter(pk=written, sequence=11).exists()


def test_a_field_it_cannot_write_exactly_is_refused():
    class WithBytes(models.Model):
        blob = models.BinaryField()

        class Meta:
            app_label = "payments"
            managed = False

    with pytest.raises(TypeError, match="BinaryField"):
        insert_cte("x", WithBytes(blob=b"\x00"))


@pytest.mark.parametrize(
    "column, value",
    [
        ("rate", Decimal("NaN")),  # the ORM refuses it; jsonb would store NaN
        ("rate", Decimal("Infinity")),
        ("rate", 1.005),  # a float: the ORM rounds it through binary; never exact
        ("rounded_to_decimals", True),  # a bool is no number
        ("source", True),  # nor text
        ("source", 42),
        ("quoted_at", dt.datetime(2026, 1, 1)),  # naive: which time zone?
    ],
)
def test_a_value_not_of_its_columns_type_is_refused(usdc, column, value):
    """Only values of the column's own type are written: where the ORM would convert (a float, a bool) or
    refuse (NaN), the row would not read back as the ORM writes it."""
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    quote = Quote(
        price_amount=Decimal("1"),
        price_currency="USD",
        network_asset=usdc,
        rate=Decimal("1"),
        source="s",
        rate_time=moment,
        quoted_at=moment,
        expires_at=moment,
        amount_base_units=Decimal("1"),
    )
    setattr(quote, column, value)
    with pytest.raises(TypeError, match="not written as a jsonb row"):
        insert_cte("x", quote, "id")

"""Rows written by one statement (the create's fast path): an unsaved model instance as one jsonb
parameter of an `INSERT ... SELECT ... FROM jsonb_populate_record(...)` common table expression.

One parameter per row, not one per column: the create's statement has a handful of parameters
instead of ~70, so psycopg does not re-parse a long statement for each of them at every execution,
and no per-column `get_db_prep_save` runs. The SQL text of each (model, columns, overrides) shape is
built once per process. PostgreSQL turns each JSON value into its column's type with the type's own
input function, as it would a text parameter: a Decimal goes as its exact text, a datetime as ISO
8601 with its offset, a JSONField's value as the JSON itself."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import psycopg._queries
from django.db import models
from psycopg.types.json import Jsonb

# psycopg turns a query's %s placeholders into $n once per distinct text and keeps the result, but only for
# texts up to MAX_CACHED_STATEMENT_LENGTH (4,096 bytes): a longer one is parsed again at every execution.
# The create's statement is about 4.6 KB, and parsing it cost 0.15-0.3 ms of every create. The limit is
# raised to cover it (the cache keeps at most 128 texts, each with its conversion: a few MB at most).
# Not a documented setting of psycopg's: tests/payments/test_intent_create.py checks that the statement
# is parsed once (with server-side binding, the default; DB_SERVER_SIDE_BINDING=0 uses another cache).
psycopg._queries.MAX_CACHED_STATEMENT_LENGTH = max(
    getattr(psycopg._queries, "MAX_CACHED_STATEMENT_LENGTH", 0), 16_384
)


class Sql(str):
    """A column value written as SQL, e.g. a reference to a row inserted earlier in the same statement."""


def _refused(field: models.Field, value: Any, wanted: str) -> TypeError:
    return TypeError(f"{field}: {value!r} is not {wanted}: not written as a jsonb row")


def _converter(field: models.Field) -> Callable[[Any], Any]:
    """How a field's Python value becomes JSON that PostgreSQL reads back as the same column value.
    Only values of the field's own type are taken (None is NULL): a float, a bool for a number, a
    non-finite Decimal or a naive datetime is refused, where the ORM would convert or reject it."""
    if isinstance(field, models.ForeignKey):
        return _converter(field.target_field)  # the attname value is the target's key
    if isinstance(field, models.JSONField):
        if field.encoder is not None:
            raise TypeError(f"{field}: a JSONField with its own encoder is not written as a jsonb row")
        return lambda value: value  # stored as the JSON value itself
    if isinstance(field, models.DecimalField):

        def decimal(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, Decimal) and value.is_finite():
                return str(value)  # exact: never through a float
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            raise _refused(field, value, "a finite Decimal")

        return decimal
    if isinstance(field, models.DateTimeField):

        def moment(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, datetime.datetime) and value.utcoffset() is not None:
                return value.isoformat()  # with its offset
            raise _refused(field, value, "an aware datetime")

        return moment
    if isinstance(field, models.BooleanField):
        return _typed(field, bool, "a bool")
    if isinstance(field, models.IntegerField | models.AutoField | models.BigAutoField):
        return _typed(field, int, "an int")
    if isinstance(field, models.CharField | models.TextField):
        return _typed(field, str, "a str")
    raise TypeError(f"{field}: {type(field).__name__} is not written as a jsonb row")


def _typed(field: models.Field, kind: type, wanted: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
            return value
        raise _refused(field, value, wanted)

    return check


@dataclass(frozen=True)
class _Shape:
    sql: str  # "{name} AS (INSERT ...)" with one %s, the row
    values: tuple[tuple[str, str, Callable[[Any], Any]], ...]  # (column, attname, converter) in the row


@lru_cache(maxsize=64)
def _shape(
    model: type[models.Model],
    name: str,
    with_pk: bool,
    overrides: tuple[tuple[str, str], ...],
    returning: str,
    where: str,
) -> _Shape:
    table = model._meta.db_table
    overridden = dict(overrides)
    columns, expressions, values = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key and not with_pk:
            continue  # the database gives it
        columns.append(f'"{field.column}"')
        if field.column in overridden:
            expressions.append(overridden[field.column])
        else:
            expressions.append(f'r."{field.column}"')
            values.append((field.column, field.attname, _converter(field)))
    unknown = set(overridden) - {f.column for f in model._meta.concrete_fields}
    if unknown:
        raise ValueError(f"{table} has no column {sorted(unknown)}")
    tail = (f" WHERE {where}" if where else "") + (f" RETURNING {returning}" if returning else "")
    sql = (
        f"{name} AS (INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(expressions)} "
        f"FROM jsonb_populate_record(NULL::{table}, %s) AS r{tail})"
    )
    return _Shape(sql, tuple(values))


def insert_cte(
    name: str, obj: models.Model, returning: str = "", where: Sql | None = None, **overrides: Sql
) -> tuple[str, list[Any]]:
    """`name AS (INSERT INTO <table> ... [WHERE where] [RETURNING ...])` for one unsaved instance, with
    its one parameter. Column values are the instance's, as the ORM would insert them (defaults were
    applied when it was built; `auto_now` fields are the caller's to set; an unset auto primary key is
    left to the database), except `overrides`: {column: SQL}. With `where` (SQL), the row is written
    only if it holds."""
    shape = _shape_for(type(obj), name, obj.pk is not None, returning, overrides, where)
    row = {column: convert(getattr(obj, attname)) for column, attname, convert in shape.values}
    return shape.sql, [Jsonb(row)]


def insert_values_cte(
    name: str,
    model: type[models.Model],
    values: dict[str, Any],
    returning: str = "",
    where: Sql | None = None,
    **overrides: Sql,
) -> tuple[str, list[Any]]:
    """`insert_cte` for a row given as {attname: value} rather than a model instance (building an instance
    costs more than the row's SQL: the create writes several). Every column not in `overrides` must
    have its value here, defaults included: a missing one is an error, never a silent NULL. The
    primary key may be left out when the database gives it."""
    pk = model._meta.pk.attname
    shape = _shape_for(model, name, pk in values, returning, overrides, where)
    try:
        row = {column: convert(values[attname]) for column, attname, convert in shape.values}
    except KeyError as missing:
        raise TypeError(f"{model._meta.db_table}: no value for {missing}") from None
    extra = set(values) - {attname for _, attname, _ in shape.values}
    if extra:
        raise TypeError(f"{model._meta.db_table}: {sorted(extra)} are not written (overridden or unknown)")
    return shape.sql, [Jsonb(row)]


def _shape_for(
    model: type[models.Model],
    name: str,
    with_pk: bool,
    returning: str,
    overrides: dict[str, Sql],
    where: Sql | None,
) -> _Shape:
    if not all(isinstance(sql, Sql) for sql in overrides.values()):
        raise TypeError("overrides are SQL (rows.Sql); other values go in the row")
    if where is not None and not isinstance(where, Sql):
        raise TypeError("where is SQL (rows.Sql)")
    return _shape(
        model,
        name,
        with_pk,
        tuple(sorted((column, str(sql)) for column, sql in overrides.items())),
        returning,
        str(where or ""),
    )

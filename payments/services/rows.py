"""Rows written by one statement (the create's fast path): an unsaved model instance as one jsonb
parameter of an `INSERT ... SELECT ... FROM jsonb_populate_record(...)` common table expression.

One parameter per row, not one per column: the create's statement has a handful of parameters
instead of ~70, so psycopg does not re-parse a long statement for each of them at every execution,
and no per-column `get_db_prep_save` runs. The SQL text of each (model, columns, overrides) shape is
built once per process. PostgreSQL turns each JSON value into its column's type with the type's own
input function, as it would a text parameter: a Decimal goes as its exact text, a datetime as ISO
8601 with its offset, a JSONField's value as the JSON itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db import models
from psycopg.types.json import Jsonb


class Sql(str):
    """A column value written as SQL, e.g. a reference to a row inserted earlier in the same statement."""


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def _iso(value: Any) -> Any:
    return None if value is None else value.isoformat()


def _same(value: Any) -> Any:
    return value


def _converter(field: models.Field) -> Callable[[Any], Any]:
    """How a field's Python value becomes JSON that PostgreSQL reads back as the same column value."""
    if isinstance(field, models.JSONField):
        if field.encoder is not None:
            raise TypeError(f"{field}: a JSONField with its own encoder is not written as a jsonb row")
        return _same  # stored as the JSON value itself
    if isinstance(field, models.DecimalField | models.UUIDField):
        return _text  # exact: never through a float
    if isinstance(field, models.DateTimeField | models.DateField | models.TimeField):
        return _iso  # an aware datetime carries its offset
    if isinstance(
        field,
        models.CharField
        | models.TextField
        | models.IntegerField
        | models.BooleanField
        | models.ForeignKey
        | models.AutoField
        | models.BigAutoField,
    ):
        return _same  # a foreign key's attname value is its target's (int or text) key
    raise TypeError(f"{field}: {type(field).__name__} is not written as a jsonb row")


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
    tail = f" RETURNING {returning}" if returning else ""
    sql = (
        f"{name} AS (INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(expressions)} "
        f"FROM jsonb_populate_record(NULL::{table}, %s) AS r{tail})"
    )
    return _Shape(sql, tuple(values))


def insert_cte(name: str, obj: models.Model, returning: str = "", **overrides: Sql) -> tuple[str, list[Any]]:
    """`name AS (INSERT INTO <table> ... [RETURNING ...])` for one unsaved instance, with its one
    parameter. Column values are the instance's, as the ORM would insert them (defaults were applied
    when it was built; `auto_now` fields are the caller's to set; an unset auto primary key is left
    to the database), except `overrides`: {column: SQL}."""
    if not all(isinstance(sql, Sql) for sql in overrides.values()):
        raise TypeError("overrides are SQL (rows.Sql); other values go in the instance")
    shape = _shape(
        type(obj),
        name,
        obj.pk is not None,
        tuple(sorted((column, str(sql)) for column, sql in overrides.items())),
        returning,
    )
    row = {column: convert(getattr(obj, attname)) for column, attname, convert in shape.values}
    return shape.sql, [Jsonb(row)]

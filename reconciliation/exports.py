"""A report's rows as CSV cells: the same values as the JSON rows, a list joined by a space, every cell made
safe for a spreadsheet by `gateway.csvexport` (the stream, the formula guard)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .selectors import COLUMN_SET, COLUMNS, LIST_COLUMNS, LIST_SEPARATOR


def csv_cells(row: dict, columns: tuple[str, ...] = COLUMNS, lists: frozenset[str] = LIST_COLUMNS) -> list:
    return [
        LIST_SEPARATOR.join(v or "" for v in row[name]) if name in lists else row[name] for name in columns
    ]


def csv_rows(
    rows: Iterable[dict], columns: tuple[str, ...] = COLUMNS, lists: frozenset[str] = LIST_COLUMNS
) -> Iterator[list]:
    return (csv_cells(row, columns, lists) for row in rows)


def csv_filename(label: str, column_set: str = COLUMN_SET) -> str:
    """`reconciliation-v1-<label>.csv`: the column set's version in the name."""
    return f"{column_set.replace('/', '-v')}-{label}.csv"

"""The reconciliation as CSV cells: the same values as the JSON rows, a list joined by a space, every
cell made safe for a spreadsheet by `gateway.csvexport` (the stream, the formula guard)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .selectors import COLUMN_SET, COLUMNS, LIST_COLUMNS, LIST_SEPARATOR


def csv_cells(row: dict) -> list[str | None]:
    return [
        LIST_SEPARATOR.join(v or "" for v in row[name]) if name in LIST_COLUMNS else row[name]
        for name in COLUMNS
    ]


def csv_rows(rows: Iterable[dict]) -> Iterator[list[str | None]]:
    return (csv_cells(row) for row in rows)


def csv_filename(label: str) -> str:
    """`reconciliation-v1-<label>.csv`: the column set's version in the name."""
    return f"{COLUMN_SET.replace('/', '-v')}-{label}.csv"

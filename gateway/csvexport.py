"""CSV exports streamed in constant memory, with every cell a spreadsheet would run as a formula made
inert (OWASP "CSV injection": a leading =, +, -, @, tab or carriage return gets a leading apostrophe).
Reversibly: a cell that itself begins with an apostrophe gets one more, so removing exactly one leading
apostrophe, where there is one, always gives the original text back (`cell_original`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.http import StreamingHttpResponse

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPED_STARTS = (*FORMULA_STARTS, "'")


def safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(ESCAPED_STARTS) else text


def cell_original(cell: str) -> str:
    """The text `safe_cell` was given (for a reader of the export that re-computes hashes)."""
    return cell[1:] if cell.startswith("'") else cell


BLOCK = 64 * 1024  # what one streamed chunk holds: fewer, larger writes to the socket than a line each


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The header at once (a download starts before the first row is read), then the rows in blocks of
    about BLOCK characters (RFC 4180's quoting, LF line ends: as PostgreSQL's COPY writes the
    reconciliation, so every file the gateway exports ends its lines alike)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    yield buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
        if buffer.tell() >= BLOCK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def csv_response(
    filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> StreamingHttpResponse:
    """A download that starts at once and never holds the whole file (pass rows from `.iterator()`)."""
    return csv_download_response(filename, csv_lines(header, rows))


def csv_download_response(filename: str, body: Iterable[str | bytes]) -> StreamingHttpResponse:
    """A CSV download of `body`, a stream of ready blocks (`csv_lines`, or PostgreSQL's own CSV)."""
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response

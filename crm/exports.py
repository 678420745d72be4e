"""Reusable streaming writers for exports (supporters, segments, engagement).

Both take a header and an iterator of rows and never hold the whole export in memory: CSV is
yielded line by line; XLSX is written by openpyxl's write-only workbook into a spooled temporary
file (memory up to 16 MB, then disk) and read back in chunks.

Every text cell is protected against CSV/formula injection (OWASP "CSV Injection"): a value
starting with = + - @ tab or carriage return is prefixed with a single quote, so a spreadsheet
shows it as text instead of evaluating it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from tempfile import SpooledTemporaryFile
from typing import IO, Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK = 64 * 1024
# Control characters an XLSX (XML 1.0) cell cannot hold; openpyxl would raise on them.
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def safe_text(value: str) -> str:
    """Neutralise a cell a spreadsheet would read as a formula."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def safe_text_array(array):
    """safe_text over a pyarrow string array, in C: the same prefixes, the same quote."""
    import pyarrow.compute as pc

    starts = pc.starts_with(array, FORMULA_PREFIXES[0])
    for prefix in FORMULA_PREFIXES[1:]:
        starts = pc.or_(starts, pc.starts_with(array, prefix))
    return pc.if_else(starts, pc.binary_join_element_wise("'", array, ""), array)


def _utc_naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _utc_naive(value).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return safe_text(value)
    return value


def _xlsx_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc_naive(value)  # Excel has no time zones: cells are UTC
    if isinstance(value, str):
        return safe_text(_ILLEGAL_XML.sub("", value))
    return value


class _Line:
    """A file-like object csv.writer writes one line into, then hands back."""

    def __init__(self):
        self.value = ""

    def write(self, text: str) -> None:
        self.value += text


def stream_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = True
               ) -> Iterator[str]:
    """Yield a CSV document line by line (UTF-8 BOM first so Excel reads accents right)."""
    line = _Line()
    writer = csv.writer(line)
    if bom:
        yield "\ufeff"
    writer.writerow(header)
    yield line.value
    for row in rows:
        line.value = ""
        writer.writerow([_csv_cell(v) for v in row])
        yield line.value


def xlsx_file(header: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str = "Export"
              ) -> IO[bytes]:
    """Write rows into a write-only workbook in a spooled temporary file, rewound for reading."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31] or "Export")
    sheet.append(list(header))
    for row in rows:
        sheet.append([_xlsx_cell(v) for v in row])
    spool = SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    workbook.save(spool)
    spool.seek(0)
    return spool


def iter_file(handle: IO[bytes], chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield a file's bytes in chunks, closing it at the end (or when the client goes away)."""
    try:
        while data := handle.read(chunk):
            yield data
    finally:
        handle.close()


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The whole CSV as one string (for small exports and tests)."""
    buffer = io.StringIO()
    for part in stream_csv(header, rows):
        buffer.write(part)
    return buffer.getvalue()

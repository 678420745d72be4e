"""Open an uploaded CSV or XLSX file: sniff its encoding and delimiter, then read it in chunks.

Every reader yields chunks of rows as lists of strings, the header excluded, so the engine
treats CSV and XLSX alike: iter_chunks row by row (the preview), iter_column_chunks column by
column (the import, which judges a whole column at a time). A file we cannot read raises
UnreadableFile with a message for staff.

Control characters (crm.input_guard's definition: NUL, escape and the rest of Unicode's Cc,
but not tab or line breaks) are removed from every cell and header as it is read: legacy
exports pad fields with NUL or use odd separators, PostgreSQL refuses NUL in text, and
nothing else in the app accepts them either.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from crm.input_guard import CONTROL_CHARACTERS, strip_control_characters

CHUNK_ROWS = 50_000
SAMPLE_BYTES = 64 * 1024
FORMATS = ("csv", "xlsx")


class UnreadableFile(ValueError):
    """The file is not a CSV or XLSX file we can read; the message says why."""


@dataclass(frozen=True)
class FileInfo:
    """What sniffing found: enough to read the file again the same way."""

    format: str  # csv | xlsx
    header: list[str]
    encoding: str = "utf-8"
    delimiter: str = ","

    def as_options(self) -> dict:
        return {"format": self.format, "encoding": self.encoding, "delimiter": self.delimiter,
                "header": self.header}


@dataclass
class Chunk:
    """Consecutive data rows of a file, held column by column (each a list of `size` strings)."""

    columns: list[list[str]]
    size: int
    rows: list[list[str]] | None = None  # the rows as read, when the chunk was read row by row

    @classmethod
    def from_rows(cls, rows: list[list[str]], width: int) -> Chunk:
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
        return cls(columns, len(rows), rows)

    def row(self, position: int) -> list[str]:
        """The cells of one row (the same list object, when the chunk was read row by row)."""
        if self.rows is not None:
            return self.rows[position]
        return [column[position] for column in self.columns]


def file_format(filename: str) -> str:
    """csv or xlsx from the uploaded name's extension (anything else is refused)."""
    ext = Path(filename or "").suffix.lower().lstrip(".")
    if ext in ("csv", "txt", "tsv"):
        return "csv"
    if ext == "xlsx":
        return "xlsx"
    raise UnreadableFile("Upload a .csv or .xlsx file.")


def sniff(path: str | Path, fmt: str) -> FileInfo:
    """Find the encoding, delimiter and header of a file, or raise UnreadableFile."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnreadableFile("The file is empty.")
    if fmt == "xlsx":
        return FileInfo("xlsx", _xlsx_header(path))
    encoding = detect_encoding(path)
    with path.open("rb") as fh:
        raw = fh.read(SAMPLE_BYTES)
    sample = raw.decode(encoding, errors="ignore")
    delimiter = detect_delimiter(sample)
    header = _csv_header(sample, delimiter)
    return FileInfo("csv", header, encoding, delimiter)


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as such, else Windows-1252/Latin-1."""
    with path.open("rb") as fh:
        head = fh.read(SAMPLE_BYTES)
        if b"\x00" in head:
            raise UnreadableFile("This does not look like a text (CSV) file: it contains binary data.")
        encoding = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
        decoder = codecs.getincrementaldecoder("utf-8")()
        block = head
        try:
            while block:
                decoder.decode(block)
                block = fh.read(1024 * 1024)
            decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            pass
    with path.open("rb") as fh:
        try:
            fh.read().decode("cp1252")
        except UnicodeDecodeError:
            return "latin-1"  # cp1252 leaves five bytes undefined; Latin-1 maps every byte
    return "cp1252"


def detect_delimiter(sample: str) -> str:
    """`,` `;` or tab, as csv.Sniffer sees the sample; ',' when it cannot tell."""
    lines = [line for line in sample.splitlines() if line.strip()][:50]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t").delimiter
    except csv.Error:
        first = lines[0] if lines else ""
        counts = {d: first.count(d) for d in (",", ";", "\t")}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _csv_header(sample: str, delimiter: str) -> list[str]:
    for row in csv.reader(io.StringIO(sample), delimiter=delimiter):
        if any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            break
    else:
        raise UnreadableFile("The file has no header row.")
    if sum(1 for h in header if h) == 0:
        raise UnreadableFile("The file has no header row.")
    if not any(ch.isalpha() for h in header for ch in h):
        raise UnreadableFile("The first row should name the columns (for example Email, First name).")
    return _unique_names(header)


def _unique_names(header: list[str]) -> list[str]:
    """Name blank columns and disambiguate repeats, so every column can be mapped."""
    seen: dict[str, int] = {}
    names = []
    for i, name in enumerate(header, start=1):
        name = strip_control_characters(name).strip() or f"Column {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name} ({seen[name]})"
        else:
            seen[name] = 1
        names.append(name)
    return names


def _open_xlsx(path: Path):
    from openpyxl import load_workbook

    if not zipfile.is_zipfile(path):
        raise UnreadableFile("This is not a valid .xlsx file (it may be corrupt, or an old .xls).")
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for broken packages
        raise UnreadableFile(f"This .xlsx file could not be opened: {exc}") from None
    if not workbook.worksheets:
        workbook.close()
        raise UnreadableFile("The workbook has no sheets.")
    return workbook


def _xlsx_header(path: Path) -> list[str]:
    workbook = _open_xlsx(path)
    try:
        for row in workbook.worksheets[0].iter_rows(values_only=True):
            cells = [cell_text(c) for c in row]
            if any(cells):
                while cells and not cells[-1]:
                    cells.pop()
                return _unique_names(cells)
    except UnreadableFile:
        raise
    except Exception as exc:
        raise UnreadableFile(f"This .xlsx file could not be read: {exc}") from None
    finally:
        workbook.close()
    raise UnreadableFile("The first sheet has no header row.")


def cell_text(value) -> str:
    """A spreadsheet cell as the text a person typed (12345.0 -> '12345', dates ISO)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ") if (value.hour, value.minute, value.second) != (0, 0, 0) \
            else value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return strip_control_characters(str(value)).strip()


def iter_chunks(path: str | Path, info: FileInfo, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[list[str]]]:
    """Yield the data rows (header excluded) in chunks, each row a list of len(header) strings."""
    if info.format == "xlsx":
        yield from _xlsx_chunks(Path(path), len(info.header), chunk_rows)
    else:
        yield from _csv_chunks(Path(path), info, chunk_rows)


def iter_column_chunks(path: str | Path, info: FileInfo, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    """The same rows as iter_chunks, as Chunks held column by column (no list per row)."""
    if info.format == "xlsx":
        width = len(info.header)
        for rows in _xlsx_chunks(Path(path), width, chunk_rows):
            yield Chunk.from_rows(rows, width)
        return
    for columns in _csv_columns(Path(path), info, chunk_rows):
        yield Chunk(columns, len(columns[0]))


def _csv_chunks(path: Path, info: FileInfo, chunk_rows: int) -> Iterator[list[list[str]]]:
    for columns in _csv_columns(path, info, chunk_rows):
        yield [list(row) for row in zip(*columns, strict=True)]


def _csv_columns(path: Path, info: FileInfo, chunk_rows: int) -> Iterator[list[list[str]]]:
    """Yield chunks of data rows (header excluded) as len(header) columns of strings."""
    import pandas as pd

    width = len(info.header)
    # header=None + usecols: rows with extra trailing fields are cut to the header's width
    # instead of failing the whole file; short rows are padded with "". Blank lines skipped.
    # Columns come out of the C parser as object arrays of str: taking them whole is about
    # twice as fast as building a list per row (DataFrame.values.tolist()).
    reader = pd.read_csv(
        path, sep=info.delimiter, encoding=info.encoding, header=None, usecols=range(width),
        dtype=object, keep_default_na=False, na_filter=False, skip_blank_lines=True,
        chunksize=chunk_rows, engine="c", quoting=csv.QUOTE_MINIMAL,
    )
    skip = 1  # the header row
    try:
        for frame in reader:
            if len(frame) <= skip:
                skip -= len(frame)
                continue
            if skip:
                frame = frame.iloc[skip:]
                skip = 0
            if frame.isna().values.any():  # short rows' missing cells
                frame = frame.fillna("")
            yield [_without_control_characters(frame.iloc[:, position].tolist()) for position in range(width)]
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UnreadableFile(f"The file could not be read as CSV: {exc}") from None
    finally:
        reader.close()


def _without_control_characters(column: list[str]) -> list[str]:
    """The column's cells with control characters removed (one scan of the column when it has none)."""
    if CONTROL_CHARACTERS.search("\n".join(column)) is None:
        return column
    return [strip_control_characters(cell) for cell in column]


def _xlsx_chunks(path: Path, width: int, chunk_rows: int) -> Iterator[list[list[str]]]:
    workbook = _open_xlsx(path)
    try:
        rows: list[list[str]] = []
        header_seen = False
        for raw in workbook.worksheets[0].iter_rows(values_only=True):
            cells = [cell_text(c) for c in raw[:width]]
            if not any(cells):
                continue  # blank rows are skipped, as in CSV
            if not header_seen:
                header_seen = True
                continue
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            rows.append(cells)
            if len(rows) >= chunk_rows:
                yield rows
                rows = []
        if rows:
            yield rows
    finally:
        workbook.close()


def count_rows(path: str | Path, info: FileInfo) -> int:
    """Count data rows (blank lines skipped, quoted newlines respected) for the progress bar."""
    if info.format == "xlsx":
        return sum(len(chunk) for chunk in _xlsx_chunks(Path(path), len(info.header), CHUNK_ROWS))
    count = _count_lines_without_quotes(Path(path))
    if count is not None:
        return max(count - 1, 0)
    with open(path, encoding=info.encoding, newline="") as fh:
        count = sum(1 for row in csv.reader(fh, delimiter=info.delimiter) if row)
    return max(count - 1, 0)


def _count_lines_without_quotes(path: Path, block_size: int = 1 << 22) -> int | None:
    """Non-blank lines of a file with no `"` in it (so no quoted line breaks), or None if it has one.

    The count csv.reader gives such a file (a line ends at \r, \n or \r\n), several times
    faster: bytes are split in C instead of parsed into rows. Every encoding sniff() picks
    writes `"`, \r and \n as those single ASCII bytes.
    """
    count = 0
    unfinished = False  # the previous block ended inside a line (already counted)
    with path.open("rb") as fh:
        while block := fh.read(block_size):
            if b'"' in block:
                return None
            lines = block.splitlines()
            count += len(lines) - lines.count(b"")
            if unfinished and block[:1] not in (b"\r", b"\n"):
                count -= 1  # this block's first line continues that one
            unfinished = block[-1:] not in (b"\r", b"\n")
    return count

"""Engagement exports: one row per message, or one per supporter, as CSV, XLSX or Parquet.

Rows come from one SELECT. On PostgreSQL the server writes them with COPY (query) TO STDOUT
as CSV: the CSV export is that text as it comes (the formula protection, times and lists done
in SQL), and for Parquet and XLSX pyarrow's CSV reader parses it, a block at a time, into
typed record batches. Elsewhere (SQLite) the rows are read through a server-side cursor
(`yield_per`), EXPORT_CHUNK_ROWS at a time, and turned into the same record batches. Either
way each batch is written before the next is read: CSV by pyarrow's writer (or as COPY wrote
it), XLSX through openpyxl's write-only workbook into a spooled file (crm/exports.py), and
Parquet by pyarrow's ParquetWriter, with typed columns (ids as int64, times as UTC
timestamps, flags as booleans, petitions and tags as lists of strings). Memory is one batch,
whatever the size of the export.

Small exports stream at once; larger ones (over EXPORT_STREAM_MAX_ROWS) are built by a worker
(workers/exports.py) into instance/exports, downloadable by the requester only until
EXPORT_KEEP_DAYS have passed. Every export is audit-logged: who, the filters, format, rows.
An address is exported only with the export permission and the requester ticking the box.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Select, and_, case, func, literal, select

from crm import audit
from crm import exports as writers
from crm.database import is_postgres
from crm.extensions import db
from crm.models import (
    Campaign,
    ConsentEvent,
    EngagementEvent,
    ExportJob,
    Message,
    Petition,
    Segment,
    Signature,
    Supporter,
    Tag,
    supporter_tag,
    utcnow,
)

log = logging.getLogger(__name__)

KINDS = ("engagement", "summary")
FORMATS = ("csv", "xlsx", "parquet")
MIMETYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet",
             "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
LIST_SEPARATOR = ";"


class ExportProblem(ValueError):
    """The filters name something that does not exist, or make no sense."""


@dataclass
class Filters:
    """What to export: messages sent between two UTC dates (inclusive), of some campaigns, to a segment."""

    since: date | None = None
    until: date | None = None
    campaign_ids: list[int] = field(default_factory=list)
    segment_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["since"] = self.since.isoformat() if self.since else None
        values["until"] = self.until.isoformat() if self.until else None
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Filters:
        return cls(since=date.fromisoformat(values["since"]) if values.get("since") else None,
                   until=date.fromisoformat(values["until"]) if values.get("until") else None,
                   campaign_ids=[int(c) for c in values.get("campaign_ids") or []],
                   segment_id=values.get("segment_id"))


def check(filters: Filters) -> None:
    """Raise ExportProblem when the filters name a campaign or segment that does not exist."""
    if filters.since and filters.until and filters.since > filters.until:
        raise ExportProblem("The start date is after the end date.")
    if filters.campaign_ids:
        found = set(db.session.scalars(select(Campaign.id).where(Campaign.id.in_(filters.campaign_ids))))
        missing = sorted(set(filters.campaign_ids) - found)
        if missing:
            raise ExportProblem(f"No campaign {missing[0]}.")
    if filters.segment_id is not None:
        segment = db.session.get(Segment, filters.segment_id)
        if segment is None:
            raise ExportProblem(f"No segment {filters.segment_id}.")
        from crm.segments.rules import RuleError

        try:
            _segment_ids(segment)
        except RuleError as exc:
            raise ExportProblem(f"The segment's rules no longer work: {exc}") from exc


def _segment_ids(segment: Segment):
    from crm.segments.compiler import segment_query

    return segment_query(segment.rules)


def _message_conditions(filters: Filters) -> list:
    conditions = []
    if filters.since:
        conditions.append(Message.sent_at >= datetime(filters.since.year, filters.since.month, filters.since.day,
                                                      tzinfo=UTC))
    if filters.until:
        end = filters.until + timedelta(days=1)
        conditions.append(Message.sent_at < datetime(end.year, end.month, end.day, tzinfo=UTC))
    if filters.campaign_ids:
        conditions.append(Message.campaign_id.in_(filters.campaign_ids))
    if filters.segment_id is not None:
        segment = db.session.get(Segment, filters.segment_id)
        conditions.append(Message.supporter_id.in_(_segment_ids(segment)))
    return conditions


def _petitions_by_supporter():
    # One grouped pass over signature (3M rows: a hash aggregate of about 2 s on PostgreSQL),
    # joined by hash to the messages, rather than a correlated string_agg per message.
    return (select(Signature.supporter_id.label("supporter_id"),
                   func.aggregate_strings(Petition.slug, LIST_SEPARATOR).label("slugs"))
            .join(Petition, Petition.id == Signature.petition_id)
            .where(Signature.supporter_id.is_not(None))
            .group_by(Signature.supporter_id).subquery("petitions"))


def _tags_by_supporter():
    return (select(supporter_tag.c.supporter_id.label("supporter_id"),
                   func.aggregate_strings(Tag.name, LIST_SEPARATOR).label("names"))
            .join(Tag, Tag.id == supporter_tag.c.tag_id)
            .group_by(supporter_tag.c.supporter_id).subquery("tags"))


# -- the two exports ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    name: str
    type: str  # int | str | time | bool | list


ENGAGEMENT = (
    Column("message_id", "int"), Column("supporter_id", "int"), Column("email", "str"),
    Column("campaign_id", "int"), Column("subject", "str"), Column("status", "str"),
    Column("sent_at", "time"), Column("first_open_at", "time"), Column("first_click_at", "time"),
    Column("unsubscribed_at", "time"), Column("bounced_at", "time"), Column("bounce_type", "str"),
    Column("complained_at", "time"), Column("opened_by_person", "bool"), Column("opened_by_machine", "bool"),
    Column("clicked_by_person", "bool"), Column("clicked_by_machine", "bool"), Column("petitions", "list"),
)
SUMMARY = (
    Column("supporter_id", "int"), Column("email", "str"), Column("messages_received", "int"),
    Column("messages_opened", "int"), Column("messages_clicked", "int"), Column("opens", "int"),
    Column("clicks", "int"), Column("last_engagement_at", "time"), Column("email_status", "str"),
    Column("petitions", "list"), Column("tags", "list"),
)


def columns(kind: str, include_email: bool) -> tuple[Column, ...]:
    found = ENGAGEMENT if kind == "engagement" else SUMMARY
    return tuple(c for c in found if include_email or c.name != "email")


def _labelled(spec: tuple[Column, ...], selected: list, include_email: bool) -> list:
    """Each selected expression named as its export column (the COPY path reads them by name)."""
    return [expr.label(c.name) for c, expr in zip(spec, selected, strict=True) if include_email or c.name != "email"]


def engagement_query(filters: Filters, include_email: bool) -> Select:
    """One row per message: the times and flags of what happened to it, and its supporter's petitions.

    Every flag is on the message's own row (the tracking flush keeps them: the first human open
    and click, and whether a machine opened or clicked), so no engagement event is read. Grouping
    10,000,000 events per message was most of a 5,000,000-row export's time."""
    conditions = _message_conditions(filters)
    unsubscribes = (select(ConsentEvent.campaign_id.label("campaign_id"),
                           ConsentEvent.supporter_id.label("supporter_id"),
                           func.min(ConsentEvent.created_at).label("at"))
                    .where(ConsentEvent.action == "opt_out", ConsentEvent.campaign_id.is_not(None)))
    if filters.campaign_ids:
        unsubscribes = unsubscribes.where(ConsentEvent.campaign_id.in_(filters.campaign_ids))
    unsubscribes = unsubscribes.group_by(ConsentEvent.campaign_id, ConsentEvent.supporter_id).subquery("unsubs")
    petitions = _petitions_by_supporter()
    selected = [Message.id, Message.supporter_id, Message.email, Message.campaign_id, Campaign.subject,
                Message.status, Message.sent_at, Message.opened_at, Message.clicked_at, unsubscribes.c.at,
                Message.bounced_at, Message.bounce_type, Message.complained_at, _is_set(Message.opened_at),
                _is_true(Message.opened_by_machine), _is_set(Message.clicked_at),
                _is_true(Message.clicked_by_machine), petitions.c.slugs]
    selected = _labelled(ENGAGEMENT, selected, include_email)
    # PostgreSQL scans the messages (in parallel) past hashes of the campaigns, the unsubscribes
    # and the petitions per supporter, then sorts them by id.
    return (select(*selected).select_from(Message)
            .join(Campaign, Campaign.id == Message.campaign_id)
            .outerjoin(unsubscribes, and_(unsubscribes.c.campaign_id == Message.campaign_id,
                                          unsubscribes.c.supporter_id == Message.supporter_id))
            .outerjoin(petitions, petitions.c.supporter_id == Message.supporter_id)
            .where(*conditions).order_by(Message.id))


def _is_set(column):
    """1 when the time is set, else 0 (the export's flags are 0/1 on every database)."""
    return case((column.is_not(None), 1), else_=0)


def _is_true(column):
    return case((column.is_(True), 1), else_=0)


def summary_query(filters: Filters, include_email: bool) -> Select:
    """One row per supporter who received a message within the filters: counts, last engagement, status."""
    conditions = _message_conditions(filters)
    received = (select(Message.supporter_id.label("supporter_id"),
                       func.count(Message.id).label("received"),
                       func.count(Message.opened_at).label("opened"), func.count(Message.clicked_at).label("clicked"))
                .where(Message.supporter_id.is_not(None), Message.status == "sent", *conditions)
                .group_by(Message.supporter_id).subquery("received"))
    events = (select(EngagementEvent.supporter_id.label("supporter_id"),
                     func.sum(case((EngagementEvent.kind == "open", 1), else_=0)).label("opens"),
                     func.sum(case((EngagementEvent.kind == "click", 1), else_=0)).label("clicks"),
                     func.max(EngagementEvent.created_at).label("last"))
              .where(EngagementEvent.kind.in_(("open", "click"))))
    if filters.campaign_ids:
        events = events.where(EngagementEvent.campaign_id.in_(filters.campaign_ids))
    events = events.group_by(EngagementEvent.supporter_id).subquery("events")
    petitions, tags = _petitions_by_supporter(), _tags_by_supporter()
    selected = [Supporter.id, Supporter.email, received.c.received, received.c.opened, received.c.clicked,
                func.coalesce(events.c.opens, 0), func.coalesce(events.c.clicks, 0), events.c.last,
                Supporter.email_status, petitions.c.slugs, tags.c.names]
    selected = _labelled(SUMMARY, selected, include_email)
    return (select(*selected).select_from(received)
            .join(Supporter, Supporter.id == received.c.supporter_id)
            .outerjoin(events, events.c.supporter_id == Supporter.id)
            .outerjoin(petitions, petitions.c.supporter_id == Supporter.id)
            .outerjoin(tags, tags.c.supporter_id == Supporter.id)
            .where(Supporter.erased_at.is_(None)))


def query_for(kind: str, filters: Filters, include_email: bool) -> Select:
    return engagement_query(filters, include_email) if kind == "engagement" else summary_query(filters, include_email)


def count_rows(kind: str, filters: Filters) -> int:
    """How many rows the export will have (one count over the messages, or over their supporters)."""
    conditions = _message_conditions(filters)
    if kind == "engagement":
        query = select(func.count()).select_from(Message).join(Campaign, Campaign.id == Message.campaign_id)
        return db.session.scalar(query.where(*conditions)) or 0
    receivers = (select(Message.supporter_id).where(Message.supporter_id.is_not(None), Message.status == "sent",
                                                   *conditions).distinct().subquery())
    return db.session.scalar(select(func.count()).select_from(receivers)
                             .join(Supporter, Supporter.id == receivers.c.supporter_id)
                             .where(Supporter.erased_at.is_(None))) or 0


# -- reading in chunks ------------------------------------------------------------------------------

XLSX_MAX_ROWS = 1_048_575  # a worksheet's rows, less the header


def _raw_partitions(query: Select, size: int) -> Iterator[list[tuple]]:
    """Rows of `query` from a psycopg named (server-side) cursor in binary format, `size` at a time.

    Measured on 100,000 export rows: SQLAlchemy's result rows over psycopg's text protocol took
    8.4 s to read, a binary named cursor 3.0 s (the database's own part, EXPLAIN ANALYZE, 1.2 s):
    the time goes into parsing text and processing each value in Python. The statement is
    compiled by SQLAlchemy with its parameters bound, as every other query here."""
    compiled = query.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True})
    raw = db.session.connection().connection.dbapi_connection
    # The three grouped subqueries are hashed in the server's memory, not sorted on disk:
    # with the default 4 MB PostgreSQL grouped 10M events by walking an index (30 s).
    raw.execute("SET LOCAL work_mem = '256MB'")
    with raw.cursor(name=f"export_{uuid.uuid4().hex[:12]}", binary=True) as cursor:
        cursor.itersize = size
        cursor.execute(str(compiled), compiled.params)
        while batch := cursor.fetchmany(size):
            yield batch


def _partitions(query: Select, size: int) -> Iterator[list[tuple]]:
    if is_postgres():
        yield from _raw_partitions(query, size)
        return
    result = db.session.execute(query.execution_options(yield_per=size))
    try:
        yield from result.partitions()
    finally:
        result.close()


def _arrow_types():
    import pyarrow as pa

    return {"int": pa.int64(), "str": pa.string(), "time": pa.timestamp("us", tz="UTC"), "bool": pa.bool_(),
            "list": pa.list_(pa.string())}


def _arrow_schema(spec: tuple[Column, ...]):
    import pyarrow as pa

    types = _arrow_types()
    return pa.schema([pa.field(c.name, types[c.type]) for c in spec])


def _utc(value):
    if isinstance(value, str):  # SQLite hands back text for computed timestamps (min/max)
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def batches(kind: str, filters: Filters, include_email: bool, size: int | None = None,
            use_copy: bool | None = None):
    """The export as Arrow record batches of typed columns.

    On PostgreSQL they are parsed by pyarrow from the server's COPY output (`_copied_batches`);
    elsewhere, or with use_copy=False, built from rows fetched through the cursor."""
    if is_postgres() if use_copy is None else use_copy:
        yield from _copied_batches(kind, filters, include_email)
    else:
        yield from _fetched_batches(kind, filters, include_email, size)


def _fetched_batches(kind: str, filters: Filters, include_email: bool, size: int | None = None):
    """Record batches, one per chunk of rows read from the cursor.

    Each chunk is turned into columns at once (zip) and each column into an Arrow array in C;
    what is left is the driver's work per value (on PostgreSQL about 3 s per 100,000 rows on a
    loaded machine, which is why PostgreSQL takes the COPY path)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    size = size or int(current_app.config.get("EXPORT_CHUNK_ROWS", 20_000))
    spec = columns(kind, include_email)
    schema = _arrow_schema(spec)
    types = _arrow_types()
    empty_list = pa.scalar([], type=types["list"])
    convert_times = not is_postgres()  # psycopg already gives aware datetimes
    for chunk in _partitions(query_for(kind, filters, include_email), size):
        arrays = []
        for column, values in zip(spec, zip(*chunk, strict=True), strict=True):
            if column.type == "bool":
                arrays.append(pc.cast(pa.array(values, type=pa.int64()), pa.bool_()))
            elif column.type == "list":
                split = pc.split_pattern(pa.array(values, type=pa.string()), LIST_SEPARATOR)
                arrays.append(pc.if_else(pc.is_null(split), empty_list, split))
            elif column.type == "time" and convert_times:
                arrays.append(pa.array([_utc(v) for v in values], type=types["time"]))
            else:
                arrays.append(pa.array(values, type=types[column.type]))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _csv_batch(batch):
    """The batch as a spreadsheet should read it: formula-safe text, UTC times to the second, lists joined."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for column, array in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_list(column.type):
            array = writers.safe_text_array(pc.binary_join(array, LIST_SEPARATOR))
        elif pa.types.is_string(column.type):
            array = writers.safe_text_array(array)
        elif pa.types.is_timestamp(column.type):
            array = pc.strftime(pc.cast(array, pa.timestamp("s", tz="UTC"), safe=False), format="%Y-%m-%d %H:%M:%S")
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def stream_csv(kind: str, filters: Filters, include_email: bool,
               progress: Callable[[int], None] | None = None, use_copy: bool | None = None) -> Iterator[bytes]:
    """The CSV document, a chunk at a time: UTF-8 with a BOM, formula-safe cells (crm/exports.py).

    On PostgreSQL (unless use_copy=False) the server writes the CSV itself (`_copied_csv`)."""
    if is_postgres() if use_copy is None else use_copy:
        yield from _copied_csv(kind, filters, include_email, progress)
        return
    import pyarrow.csv as pcsv

    yield "\ufeff".encode()
    header, done = True, 0
    for batch in _fetched_batches(kind, filters, include_email):
        out = io.BytesIO()
        pcsv.write_csv(_csv_batch(batch), out, pcsv.WriteOptions(include_header=header, quoting_style="needed"))
        header = False
        done += batch.num_rows
        if progress:
            progress(done)
        yield out.getvalue()
    if header:  # no rows: the header alone
        yield (",".join(f'"{c.name}"' for c in columns(kind, include_email)) + "\n").encode()


# -- PostgreSQL: the server writes the rows with COPY ------------------------------------------------
#
# Fetching rows costs Python work per value in the driver (30 s per million rows here, most
# of a 5,000,000-row export). COPY (query) TO STDOUT has the server format every value; the
# CSV goes to the file as it comes, and for Parquet (and XLSX) pyarrow's CSV reader parses it
# in C into typed columns, block by block. The query is the same SELECT as the fetched path's;
# for CSV it is wrapped in one that does in SQL what `_csv_batch` does in Arrow.

COPY_BLOCK_BYTES = 2 * 1024 * 1024  # CSV text per record batch: about 22,000 engagement rows


def _copy_statement(query: Select) -> tuple[str, dict]:
    compiled = query.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True})
    return str(compiled), compiled.params


def _copy_cursor():
    """A cursor on the session's connection, set for the export: UTC ISO times and hashing room."""
    raw = db.session.connection().connection.dbapi_connection
    # The grouped subqueries are hashed in memory (see _raw_partitions); times are written in
    # UTC ("2026-01-01 10:00:00.123456+00"), which pyarrow parses as timestamp[us, UTC].
    raw.execute("SET LOCAL work_mem = '256MB'")
    raw.execute("SET LOCAL TimeZone = 'UTC'")
    raw.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    return raw.cursor()


def _sql_safe_text(expr):
    """safe_text in SQL: a leading quote on a value a spreadsheet would read as a formula."""
    return case((func.left(expr, 1).in_(writers.FORMULA_PREFIXES), literal("'").concat(expr)), else_=expr)


def _csv_select(query: Select, spec: tuple[Column, ...]) -> Select:
    """The export's rows as the CSV shows them: formula-safe text, UTC times to the second, lists joined."""
    rows = query.subquery("export_rows")
    out = []
    for c in spec:
        value = rows.c[c.name]
        if c.type == "str":
            value = _sql_safe_text(value)
        elif c.type == "list":
            value = _sql_safe_text(func.coalesce(value, ""))
        elif c.type == "time":
            value = func.to_char(func.timezone("UTC", value), "YYYY-MM-DD HH24:MI:SS")
        elif c.type == "bool":
            value = case((value != 0, "true"), else_="false")
        out.append(value.label(c.name))
    return select(*out)


def _copy_chunks(cursor, sql: str, params: dict, rows: list[int]) -> Iterator[bytes]:
    """COPY's output in chunks of about a megabyte; rows[0] counts the rows as they come.

    The server sends one message per row, so the count is exact (a value holding a newline
    is still one message)."""
    statement = f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)"
    with cursor.copy(statement, params) as copy:
        parts, size = [], 0
        for row in copy:
            parts.append(row)
            size += len(row)
            if size >= 1 << 20:
                rows[0] += len(parts)
                yield b"".join(parts)
                parts, size = [], 0
        if parts:
            rows[0] += len(parts)
            yield b"".join(parts)


def _copied_csv(kind: str, filters: Filters, include_email: bool,
                progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    spec = columns(kind, include_email)
    sql, params = _copy_statement(_csv_select(query_for(kind, filters, include_email), spec))
    cursor = _copy_cursor()
    yield "\ufeff".encode()
    yield (",".join(f'"{c.name}"' for c in spec) + "\n").encode()
    rows = [0]
    for chunk in _copy_chunks(cursor, sql, params, rows):
        yield chunk
        if progress:
            progress(rows[0])


class _CopyFile(io.RawIOBase):
    """COPY's output as a readable file, for pyarrow's CSV reader."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _copied_batches(kind: str, filters: Filters, include_email: bool):
    """Record batches parsed by pyarrow from COPY ... CSV, typed as the fetched path types them."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    spec = columns(kind, include_email)
    schema = _arrow_schema(spec)
    types = _arrow_types()
    empty_list = pa.scalar([], type=types["list"])
    sql, params = _copy_statement(query_for(kind, filters, include_email))
    cursor = _copy_cursor()
    source = io.BufferedReader(_CopyFile(_copy_chunks(cursor, sql, params, [0])), buffer_size=1 << 20)
    parsed = {c.name: (pa.string() if c.type == "list" else types[c.type]) for c in spec}
    reader = pcsv.open_csv(
        source,
        # Parsed in this thread, a block at a time, so nothing is read ahead of the Parquet
        # writer: with pyarrow's reading threads one 5,000,000-row export peaked at 681 MB
        # (another at 371 MB); without them four runs peaked at 409 to 426 MB.
        read_options=pcsv.ReadOptions(column_names=[c.name for c in spec], block_size=COPY_BLOCK_BYTES,
                                      use_threads=False),
        # COPY quotes a value holding a comma, quote or newline, and an empty string (""), and
        # writes NULL as nothing: so only an unquoted empty field is null ("NULL" or "N/A" in a
        # subject is text), and the flags are the query's 0 and 1.
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=parsed, null_values=[""], strings_can_be_null=True,
                                            quoted_strings_can_be_null=False, true_values=["1"],
                                            false_values=["0"]))
    for batch in reader:
        arrays = []
        for column, array in zip(spec, batch.columns, strict=True):
            if column.type == "list":
                split = pc.split_pattern(array, LIST_SEPARATOR)
                array = pc.if_else(pc.is_null(split), empty_list, split)
            arrays.append(array)
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _xlsx_rows(kind: str, filters: Filters, include_email: bool, counter: list[int], progress) -> Iterator[list]:
    for batch in batches(kind, filters, include_email):
        names = batch.schema.names
        for row in batch.to_pylist():
            yield [LIST_SEPARATOR.join(v) if isinstance(v, list) else v for v in (row[n] for n in names)]
        counter[0] += batch.num_rows
        if progress:
            progress(counter[0])


def write_file(kind: str, fmt: str, filters: Filters, include_email: bool, handle,
               progress: Callable[[int], None] | None = None) -> int:
    """Write the whole export into a binary file object; returns the row count."""
    spec = columns(kind, include_email)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        written = 0
        with pq.ParquetWriter(handle, _arrow_schema(spec), compression="zstd") as writer:
            for batch in batches(kind, filters, include_email):
                writer.write_batch(batch)
                written += batch.num_rows
                if progress:
                    progress(written)
        return written
    if fmt == "csv":
        counter = [0]

        def count(done: int) -> None:
            counter[0] = done
            if progress:
                progress(done)

        for data in stream_csv(kind, filters, include_email, count):
            handle.write(data)
        return counter[0]
    counter = [0]
    title = "Engagement" if kind == "engagement" else "Supporters"
    spool = writers.xlsx_file([c.name for c in spec], _xlsx_rows(kind, filters, include_email, counter, progress),
                              title=title)
    for data in writers.iter_file(spool):
        handle.write(data)
    return counter[0]


def filename(kind: str, fmt: str) -> str:
    return f"{kind}-{utcnow():%Y-%m-%d}.{fmt}"


def record(kind: str, fmt: str, filters: Filters, include_email: bool, rows: int, *, actor_id: int | None = None,
           job_id: int | None = None) -> None:
    """Audit-log an export (who, filters, format, rows, whether addresses were in it); commit."""
    audit.record(f"reports.export_{kind}", f"export_job:{job_id}" if job_id else "reports", actor_id=actor_id,
                 filters=filters.as_json(), format=fmt, rows=rows, with_email=include_email)
    db.session.commit()


# -- worker-built exports ----------------------------------------------------------------------------

def export_folder() -> str:
    folder = os.path.join(current_app.instance_path, "exports")
    os.makedirs(folder, exist_ok=True)
    return folder


def create_job(kind: str, fmt: str, filters: Filters, include_email: bool, requested_by_id: int | None,
               rows_total: int) -> ExportJob:
    """Queue a worker-built export for its requester; commit."""
    from crm.queues import RUN_EXPORT, enqueue

    job = ExportJob(kind=kind, format=fmt, filters={**filters.as_json(), "include_email": include_email},
                    requested_by_id=requested_by_id, rows_total=rows_total, status="queued")
    db.session.add(job)
    db.session.commit()
    enqueue(RUN_EXPORT, job.id, job_timeout=3600)
    return job


def build(job_id: int) -> ExportJob:
    """Build a queued export's file, recording progress as it goes; commit."""
    job = db.session.get(ExportJob, job_id)
    if job is None or job.status == "done":
        return job
    filters = Filters.from_json(job.filters)
    include_email = bool(job.filters.get("include_email"))
    job.status, job.rows_done = "running", 0
    db.session.commit()
    path = os.path.join(export_folder(), f"{uuid.uuid4().hex}.{job.format}")
    job_id, requester = job.id, job.requested_by_id

    def progress(done: int) -> None:
        # A separate short transaction: the export's own cursor stays open in the session's.
        with db.engine.begin() as conn:
            conn.execute(ExportJob.__table__.update().where(ExportJob.__table__.c.id == job_id)
                         .values(rows_done=done))

    try:
        with open(path, "wb") as handle:
            rows = write_file(job.kind, job.format, filters, include_email, handle, progress)
    except Exception:
        db.session.rollback()
        if os.path.exists(path):
            os.remove(path)
        job = db.session.get(ExportJob, job_id)
        job.status, job.error = "failed", "The export failed; the worker's log has the details."
        db.session.commit()
        raise
    db.session.rollback()  # end the cursor's transaction before recording the outcome
    job = db.session.get(ExportJob, job_id)
    keep = float(current_app.config.get("EXPORT_KEEP_DAYS", 7))
    job.status, job.rows_done, job.stored_path = "done", rows, path
    job.finished_at = utcnow()
    job.expires_at = job.finished_at + timedelta(days=keep)
    record(job.kind, job.format, filters, include_email, rows, actor_id=requester, job_id=job.id)
    return job


def jobs_for(staff_id: int, limit: int = 20) -> list[ExportJob]:
    return list(db.session.scalars(select(ExportJob).where(ExportJob.requested_by_id == staff_id)
                                   .order_by(ExportJob.id.desc()).limit(limit)))


def expire_old(now: datetime | None = None) -> int:
    """Delete worker-built export files past their keeping time; returns how many."""
    now = now or utcnow()
    old = db.session.scalars(select(ExportJob).where(ExportJob.expires_at.is_not(None), ExportJob.expires_at < now,
                                                     ExportJob.stored_path.is_not(None))).all()
    for job in old:
        if job.stored_path and os.path.exists(job.stored_path):
            os.remove(job.stored_path)
        job.stored_path = None
    db.session.commit()
    return len(old)

"""Engagement exports: one row per message, or one per supporter, as CSV, XLSX or Parquet.

Rows come from one SELECT read through a server-side cursor (`yield_per`: psycopg's named
cursor on PostgreSQL), EXPORT_CHUNK_ROWS at a time, and each chunk is written before the next
is read: CSV is yielded line by line (crm/exports.py, with its formula protection), XLSX goes
through openpyxl's write-only workbook into a spooled file (crm/exports.py), and Parquet is
written one record batch per chunk by pyarrow's ParquetWriter, with typed columns (ids as
int64, times as UTC timestamps, flags as booleans, petitions and tags as lists of strings).
Memory is one chunk, whatever the size of the export.

Small exports stream at once; larger ones (over EXPORT_STREAM_MAX_ROWS) are built by a worker
(workers/exports.py) into instance/exports, downloadable by the requester only until
EXPORT_KEEP_DAYS have passed. Every export is audit-logged: who, the filters, format, rows.
An address is exported only with the export permission and the requester ticking the box.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Select, and_, case, func, select

from crm import audit
from crm import exports as writers
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


def _flag(kind: str, machine: bool):
    test = and_(EngagementEvent.kind == kind, EngagementEvent.is_machine.is_(machine))
    return func.max(case((test, 1), else_=0))


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


def engagement_query(filters: Filters, include_email: bool) -> Select:
    """One row per message: the times and flags of what happened to it, and its supporter's petitions."""
    conditions = _message_conditions(filters)
    events = select(EngagementEvent.message_id.label("message_id"), _flag("open", False).label("op"),
                    _flag("open", True).label("om"), _flag("click", False).label("cp"),
                    _flag("click", True).label("cm")).where(EngagementEvent.kind.in_(("open", "click")))
    unsubscribes = (select(ConsentEvent.campaign_id.label("campaign_id"),
                           ConsentEvent.supporter_id.label("supporter_id"),
                           func.min(ConsentEvent.created_at).label("at"))
                    .where(ConsentEvent.action == "opt_out", ConsentEvent.campaign_id.is_not(None)))
    if filters.campaign_ids:
        # ix_engagement_event_campaign_kind: only the chosen campaigns' events are grouped.
        events = events.where(EngagementEvent.campaign_id.in_(filters.campaign_ids))
        unsubscribes = unsubscribes.where(ConsentEvent.campaign_id.in_(filters.campaign_ids))
    events = events.group_by(EngagementEvent.message_id).subquery("events")
    unsubscribes = unsubscribes.group_by(ConsentEvent.campaign_id, ConsentEvent.supporter_id).subquery("unsubs")
    petitions = _petitions_by_supporter()
    selected = [Message.id, Message.supporter_id]
    if include_email:
        selected.append(Message.email)
    selected += [Message.campaign_id, Campaign.subject, Message.status, Message.sent_at, Message.opened_at,
                 Message.clicked_at, unsubscribes.c.at, Message.bounced_at, Message.bounce_type,
                 Message.complained_at, func.coalesce(events.c.op, 0), func.coalesce(events.c.om, 0),
                 func.coalesce(events.c.cp, 0), func.coalesce(events.c.cm, 0), petitions.c.slugs]
    # Hash joins to the three grouped subqueries (EXPLAIN on 5M messages: each aggregate is
    # built once; the message scan streams through them in its own order, no sort).
    return (select(*selected).select_from(Message)
            .join(Campaign, Campaign.id == Message.campaign_id)
            .outerjoin(events, events.c.message_id == Message.id)
            .outerjoin(unsubscribes, and_(unsubscribes.c.campaign_id == Message.campaign_id,
                                          unsubscribes.c.supporter_id == Message.supporter_id))
            .outerjoin(petitions, petitions.c.supporter_id == Message.supporter_id)
            .where(*conditions))


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
    selected = [Supporter.id]
    if include_email:
        selected.append(Supporter.email)
    selected += [received.c.received, received.c.opened, received.c.clicked, func.coalesce(events.c.opens, 0),
                 func.coalesce(events.c.clicks, 0), events.c.last, Supporter.email_status, petitions.c.slugs,
                 tags.c.names]
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

def _bool_or_none(value) -> bool | None:
    return None if value is None else bool(value)


def _split(value: str | None) -> list[str]:
    return sorted(value.split(LIST_SEPARATOR)) if value else []


def chunks(kind: str, filters: Filters, include_email: bool, size: int | None = None) -> Iterator[list[tuple]]:
    """The export's rows, a chunk at a time, from a server-side cursor; lists as lists, flags as booleans."""
    size = size or int(current_app.config.get("EXPORT_CHUNK_ROWS", 20_000))
    spec = columns(kind, include_email)
    bools = [i for i, c in enumerate(spec) if c.type == "bool"]
    lists = [i for i, c in enumerate(spec) if c.type == "list"]
    result = db.session.execute(query_for(kind, filters, include_email).execution_options(yield_per=size))
    try:
        for batch in result.partitions():
            rows = []
            for row in batch:
                values = list(row)
                for i in bools:
                    values[i] = _bool_or_none(values[i])
                for i in lists:
                    values[i] = _split(values[i])
                rows.append(values)
            yield rows
    finally:
        result.close()


def _flat(rows: Iterator[list[tuple]], spec: tuple[Column, ...]) -> Iterator[list]:
    lists = [i for i, c in enumerate(spec) if c.type == "list"]
    for chunk in rows:
        for row in chunk:
            for i in lists:
                row[i] = LIST_SEPARATOR.join(row[i])
            yield row


def stream_csv(kind: str, filters: Filters, include_email: bool) -> Iterator[str]:
    """The CSV document, a line at a time (UTF-8 BOM, formula-safe cells: crm/exports.py)."""
    spec = columns(kind, include_email)
    return writers.stream_csv([c.name for c in spec], _flat(chunks(kind, filters, include_email), spec))


def _arrow_schema(spec: tuple[Column, ...]):
    import pyarrow as pa

    types = {"int": pa.int64(), "str": pa.string(), "time": pa.timestamp("us", tz="UTC"), "bool": pa.bool_(),
             "list": pa.list_(pa.string())}
    return pa.schema([pa.field(c.name, types[c.type]) for c in spec])


def _utc(value):
    if isinstance(value, str):  # SQLite hands back text for computed timestamps (min/max)
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def write_file(kind: str, fmt: str, filters: Filters, include_email: bool, handle,
               progress: Callable[[int], None] | None = None) -> int:
    """Write the whole export into a binary file object; returns the row count."""
    spec = columns(kind, include_email)
    times = [i for i, c in enumerate(spec) if c.type == "time"]
    written = 0
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _arrow_schema(spec)
        with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
            for chunk in chunks(kind, filters, include_email):
                cols = list(zip(*chunk, strict=True)) if chunk else [() for _ in spec]
                arrays = []
                for i, (column, values) in enumerate(zip(spec, cols, strict=True)):
                    if i in times:
                        values = [_utc(v) for v in values]
                    arrays.append(pa.array(values, type=schema.field(column.name).type))
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                written += len(chunk)
                if progress:
                    progress(written)
        return written
    if fmt == "csv":
        counted = _counting(_flat(chunks(kind, filters, include_email), spec), progress)
        for text in writers.stream_csv([c.name for c in spec], counted):
            handle.write(text.encode("utf-8"))
        return counted.count
    counted = _counting(_flat(chunks(kind, filters, include_email), spec), progress)
    title = "Engagement" if kind == "engagement" else "Supporters"
    spool = writers.xlsx_file([c.name for c in spec], counted, title=title)
    for data in writers.iter_file(spool):
        handle.write(data)
    return counted.count


class _counting:
    """Pass rows through, counting them and reporting progress every 10,000."""

    def __init__(self, rows, progress):
        self.rows, self.progress, self.count = rows, progress, 0

    def __iter__(self):
        for row in self.rows:
            self.count += 1
            if self.progress and self.count % 10_000 == 0:
                self.progress(self.count)
            yield row


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

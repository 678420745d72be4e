"""Run an import: read the file in chunks, judge each row, and upsert each chunk in bulk.

Shared by the RQ job (workers/imports.py) and the `crm import supporters` command. Every row
is accounted for: total = created + updated + unchanged + rejected.

Three stages overlap: a reader thread parses, judges and formats the next chunks (Python);
each chunk is then written in its own transaction together with the job's progress counters
(its rows and its progress commit together, so no chunk is ever half-written); on PostgreSQL
two chunks are written at once on two connections, because the database's per-row work
(index maintenance, foreign-key triggers) is what bounds an import, and it runs in one server
process per connection. Chunks can be written in any order: duplicate addresses within the
file are refused while judging, so no two chunks touch the same supporter.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from crm import events
from crm.exports import safe_text
from crm.extensions import db
from crm.imports import queries as q
from crm.imports import reader
from crm.imports.reader import Chunk, FileInfo, count_rows, iter_column_chunks
from crm.imports.rows import Accepted, Judged, RowChecker, email_hash
from crm.models import ImportJob, Petition, Tag, utcnow

SUPPRESSION_BATCH = 1000
# Chunks written at once on PostgreSQL, each on its own connection (bench_import, 1M rows, two
# cores: 32-34 s with one writer, 20-22 s with two; three were no faster and held one more
# chunk in memory).
PG_WRITERS = 2
COUNTERS = ("created_count", "updated_count", "unchanged_count", "rejected_count", "consent_unrecognised_count",
            "processed_rows")
# Distinct unrecognised consent values an import remembers (with their row counts) to show staff.
UNRECOGNISED_VALUES_KEPT = 50


@dataclass(frozen=True)
class ConsentEvidence:
    """What an opted-in row's consent event says: the reason around the row's own value, and the wording.

    An import's consent was given somewhere else -- on paper, another site, a stall -- so the
    event says exactly that: the file asserts it, in this column, with this value. A petition's
    wording, when staff choose to record it, is labelled as what the organisation says the
    person was shown; it is never linked to a version of our own form, so it can never read as
    if the person had ticked the box there (someone who declined that very box on our form
    would otherwise appear to have agreed to the words they declined).
    """

    reason_before: str
    reason_after: str
    wording: str

    def reason(self, value: str) -> str:
        return f"{self.reason_before}{value}{self.reason_after}"


def consent_evidence(job: ImportJob, petition: Petition | None) -> ConsentEvidence:
    """The consent event text for an opted-in row of this import (petition: the one chosen, if any)."""
    column = next((c for c, f in job.mapping.items() if f == "consent"), "")
    before = (f"Consent asserted by the imported file “{job.filename}”, column “{column[:100]}”, "
              f"value “")
    after = "”; not given on a form of this system."
    wording = ""
    if petition is not None and job.options.get("petition_wording"):
        wording = petition.consent_wording
        after += (f" The wording quoted is what the organisation says the person was shown: the consent "
                  f"wording of the petition “{petition.title[:200]}” (version {petition.consent_wording_version}); "
                  f"this system did not show it to them.")
    return ConsentEvidence(before, after, wording)


@dataclass
class Plan:
    """What to do with accepted rows, resolved once per run from the job's options."""

    source: str
    evidence: ConsentEvidence
    petition_id: int | None = None
    tag_ids: list[int] = field(default_factory=list)
    rerun: bool = False
    announce: bool = False  # store a supporter.subscribed outbound event for each opted-in row
    announce_signatures: bool = False  # and a signature.created one for each new signature
    petition_slug: str = ""

    def consent_params(self) -> dict:
        return {"wording": self.evidence.wording, "reason_before": self.evidence.reason_before,
                "reason_after": self.evidence.reason_after}


def file_info(job: ImportJob) -> FileInfo:
    spec = job.options["file"]
    return FileInfo(spec["format"], list(spec["header"]), spec["encoding"], spec["delimiter"])


def parse_tags(text: str) -> list[str]:
    """'a, b,,A' -> ['a', 'b'] (trimmed, first spelling of each name kept, max 100 chars)."""
    names: list[str] = []
    for name in (text or "").split(","):
        name = " ".join(name.split())[:100]
        if name and name.lower() not in (n.lower() for n in names):
            names.append(name)
    return names


def job_petition(job: ImportJob) -> Petition | None:
    petition_id = job.options.get("petition_id")
    return db.session.get(Petition, petition_id) if petition_id else None


def make_plan(job: ImportJob, rerun: bool) -> Plan:
    options = job.options
    petition = job_petition(job)
    wanted = events.wanted_types()
    plan = Plan(source=f"import:{job.id}", rerun=rerun, evidence=consent_evidence(job, petition),
                petition_id=petition.id if petition is not None else None,
                announce=events.is_wanted("supporter.subscribed", wanted),
                announce_signatures=petition is not None and events.is_wanted("signature.created", wanted),
                petition_slug=petition.slug if petition is not None else "")
    names = parse_tags(options.get("tags", ""))
    if names:
        now = _db_time(db.session.connection(), utcnow())
        for name in names:
            db.session.execute(q.CREATE_TAG, {"name": name, "now": now})
        plan.tag_ids = list(db.session.scalars(db.select(Tag.id).where(Tag.name.in_(names))))
    return plan


def _is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _db_time(conn: Connection, value):
    return value if _is_pg(conn) else q.sqlite_time(value)


def suppressed_emails(conn: Connection, emails: list[str]) -> set[str]:
    """Which of these normalised addresses are suppressed: hashes computed here, compared in SQL."""
    if not emails or conn.execute(q.ANY_SUPPRESSION).first() is None:
        return set()
    by_hash = {email_hash(e): e for e in emails}
    hashes = list(by_hash)
    found: set[str] = set()
    for start in range(0, len(hashes), SUPPRESSION_BATCH):
        batch = hashes[start:start + SUPPRESSION_BATCH]
        found.update(conn.scalars(q.SUPPRESSED_HASHES, {"hashes": batch}))
    return {by_hash[h] for h in found}


def payload_format(conn: Connection) -> Callable[[dict[str, list]], object]:
    """How stage_rows wants accepted columns: COPY text (PostgreSQL) or parameter tuples (SQLite)."""
    return q.copy_text if _is_pg(conn) else q.sqlite_rows


def stage_rows(conn: Connection, accepted: Accepted, payload=None) -> None:
    """Load accepted rows into the TEMP staging table, in the connection's transaction."""
    if payload is None:
        payload = payload_format(conn)(accepted.columns)
    raw = conn.connection.driver_connection
    if _is_pg(conn):
        with raw.cursor() as cursor:
            for statement in q.BEGIN_CHUNK_PG:
                cursor.execute(statement)
            # One pre-formatted text block: several times faster than write_row per row here.
            with cursor.copy(q.COPY_STAGE_PG) as copy:
                copy.write(payload)
            cursor.execute(q.ANALYZE_STAGE_PG)
    else:
        cursor = raw.cursor()
        try:
            cursor.execute(q.CREATE_STAGE_SQLITE)
            cursor.execute(q.CLEAR_STAGE_SQLITE)
            cursor.executemany(q.INSERT_STAGE_SQLITE, payload)
        finally:
            cursor.close()


def _upsert_pg(conn: Connection, params: dict) -> tuple[int, int, int]:
    """Run the chunk's one statement: the fast form, or the ON CONFLICT form if it must."""
    try:
        with conn.begin_nested():  # a SAVEPOINT: a failed fast form leaves the stage intact
            return conn.execute(q.UPSERT_CHUNK_PG, params).one()
    except IntegrityError:
        # Another session created one of these addresses since `existing` looked (a petition
        # signature arriving mid-import): the same statement with ON CONFLICT DO NOTHING.
        return conn.execute(q.UPSERT_CHUNK_PG_CONCURRENT, params).one()


def apply_chunk(conn: Connection, accepted: Accepted, plan: Plan, payload=None) -> tuple[int, int, int]:
    """Upsert one chunk of accepted rows; return (created, updated, unchanged)."""
    if not accepted:
        return 0, 0, 0
    stage_rows(conn, accepted, payload)
    now = _db_time(conn, utcnow())
    params = {"source": plan.source, "now": now}
    if _is_pg(conn):
        created, updated, previously = _upsert_pg(conn, {
            **params, **plan.consent_params(), "petition_id": plan.petition_id, "tag_ids": plan.tag_ids,
            "announce": plan.announce, "announce_signatures": plan.announce_signatures,
            "petition_slug": plan.petition_slug})
        created += previously
        return created, updated, len(accepted) - created - updated
    previously = conn.scalar(q.PREVIOUSLY_CREATED, params) if plan.rerun else 0
    updated = conn.execute(q.UPDATE_EXISTING, params).rowcount
    created = conn.execute(q.INSERT_NEW, params).rowcount + previously
    conn.execute(q.INSERT_CONSENT_EVENTS, {**params, **plan.consent_params()})
    if plan.announce:
        conn.execute(q.ANNOUNCE_SUBSCRIBED, params)
    conn.execute(q.SUBSCRIBE_OPTED_IN, params)
    if plan.petition_id is not None:
        # New ids come after the highest (one writer at a time on SQLite): those are the announced.
        before = conn.scalar(q.LAST_SIGNATURE_ID) if plan.announce_signatures else None
        conn.execute(q.INSERT_SIGNATURES, {**params, "petition_id": plan.petition_id})
        if plan.announce_signatures:
            conn.execute(q.ANNOUNCE_SIGNED, {"now": now, "after": before, "petition_id": plan.petition_id,
                                             "petition_slug": plan.petition_slug})
    for tag_id in plan.tag_ids:
        conn.execute(q.INSERT_TAGS, {"tag_id": tag_id})
    return created, updated, len(accepted) - created - updated


def drop_suppressed(conn: Connection, chunk: Chunk, judged: Judged) -> tuple[Judged, bool]:
    """Move suppressed addresses from accepted to rejected (they are never stored).

    Returns the judgement and whether anything moved (the staging payload is then stale).
    """
    accepted = judged.accepted
    suppressed = suppressed_emails(conn, accepted.emails)
    if not suppressed:
        return judged, False
    emails = accepted.emails
    rejected = judged.rejected + [(chunk.row(accepted.positions[k]), "suppressed")
                                  for k, email in enumerate(emails) if email in suppressed]
    keep = [k for k, email in enumerate(emails) if email not in suppressed]
    return Judged(accepted.take(keep), rejected), True


def judge_chunk(checker: RowChecker, rows: list[list[str]]) -> Judged:
    """Split rows into accepted rows and (row, reason) rejections, suppression included."""
    chunk = Chunk.from_rows(rows, len(checker.header))
    return drop_suppressed(db.session.connection(), chunk, checker.judge(chunk))[0]


def rejected_csv(rejected: list[tuple[list[str], str]]) -> str:
    """Rejected rows as lines of the rejected-rows CSV: the cells, then the reason.

    Cells that a spreadsheet would run as a formula get a leading ' (as exports do).
    """
    out = io.StringIO()
    csv.writer(out).writerows([*map(safe_text, row), reason] for row, reason in rejected)
    return out.getvalue()


@dataclass
class Prepared:
    """A chunk read and judged ahead of the database, with its staging payload and rejected lines."""

    chunk: Chunk
    judged: Judged
    payload: object
    rejected_text: str


@dataclass
class Written:
    """What writing a chunk did: counts per COUNTERS, the rows it rejected as suppressed, and the
    unrecognised consent values of the rows it kept (value -> rows)."""

    counts: dict[str, int]
    suppressed: list[tuple[list[str], str]]
    unrecognised: Counter = field(default_factory=Counter)


def unrecognised_values(accepted: Accepted) -> Counter:
    """The consent values of kept rows that mean neither yes nor no, with how many rows hold each."""
    flags = accepted.columns.get("consent_unrecognised") or ()
    return Counter(value for value, flag in zip(accepted.columns["consent_value"], flags, strict=False) if flag)


def prefetch(info: FileInfo, path: str, checker: RowChecker, format_payload: Callable[[dict[str, list]], object],
             depth: int = 1) -> Iterator[Prepared]:
    """Read, judge and format the next chunks in a thread while the database writes this one.

    Parsing, checking and formatting are Python work; the upsert mostly waits on PostgreSQL or
    SQLite's C code, which releases the GIL, so on two cores the two overlap. Errors are
    re-raised here.
    """
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for chunk in iter_column_chunks(path, info, reader.CHUNK_ROWS):
                if stop.is_set():
                    return
                judged = checker.judge(chunk)
                results.put(Prepared(chunk, judged, format_payload(judged.accepted.columns),
                                     rejected_csv(judged.rejected)))
            results.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            results.put(exc)

    thread = threading.Thread(target=produce, name="import-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                results.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def write_chunk(conn: Connection, prepared: Prepared, plan: Plan, job_id: int) -> Written:
    """Write one chunk and add its counts to the job's progress, in conn's transaction (not committed)."""
    judged, changed = drop_suppressed(conn, prepared.chunk, prepared.judged)
    created, updated, unchanged = apply_chunk(conn, judged.accepted, plan, None if changed else prepared.payload)
    unrecognised = unrecognised_values(judged.accepted)
    counts = {"created_count": created, "updated_count": updated, "unchanged_count": unchanged,
              "rejected_count": len(judged.rejected), "consent_unrecognised_count": sum(unrecognised.values()),
              "processed_rows": prepared.chunk.size}
    conn.execute(q.RECORD_PROGRESS, {"id": job_id, **counts})
    return Written(counts, judged.rejected[len(prepared.judged.rejected):], unrecognised)


def write_serially(chunks: Iterator[Prepared], plan: Plan, job_id: int) -> Iterator[tuple[str, Written]]:
    """Write each chunk in the session's connection, committing each with its progress.

    Yields (the chunk's rejected-rows CSV lines, what writing it did) as each chunk commits.
    """
    for prepared in chunks:
        written = write_chunk(db.session.connection(), prepared, plan, job_id)
        db.session.commit()
        yield prepared.rejected_text, written


def write_in_parallel(chunks: Iterator[Prepared], plan: Plan, job_id: int, writers: int
                      ) -> Iterator[tuple[str, Written]]:
    """Write chunks on `writers` connections at once, each committed with its progress.

    Yields as write_serially does, in file order. The next chunk is taken from the reader only
    when a writer is free, so at most `writers` chunks are being written and one more waits
    ready in the reader's queue (memory stays bounded). On an error, the chunks being written
    finish before it is raised: a failed import never has a writer still running behind it.
    """
    engine = db.engine

    def write(prepared: Prepared) -> Written:
        with engine.connect() as conn:
            written = write_chunk(conn, prepared, plan, job_id)
            conn.commit()
            return written

    with ThreadPoolExecutor(writers, thread_name_prefix="import-writer") as pool:
        pending: deque[tuple[str, Future]] = deque()  # in file order; only the small parts kept

        def busy() -> list[Future]:
            return [future for _, future in pending if not future.done()]

        def failed() -> bool:
            return any(future.done() and future.exception() is not None for _, future in pending)

        for prepared in chunks:
            pending.append((prepared.rejected_text, pool.submit(write, prepared)))
            del prepared  # the writer holds the chunk; it is freed as soon as it is written
            while pending:
                if pending[0][1].done():
                    text, future = pending.popleft()
                    yield text, future.result()  # raises the chunk's error, if it failed
                elif failed() or len(busy()) >= writers:
                    # A writer failed (stop taking chunks; its error is raised in file order)
                    # or none is free.
                    wait(busy(), return_when=FIRST_COMPLETED)
                else:
                    break
        while pending:
            text, future = pending.popleft()
            yield text, future.result()


def rejected_path_for(job: ImportJob) -> Path:
    folder = Path(current_app.instance_path) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{Path(job.stored_path).stem}-{job.id}-rejected.csv"


def run_import(job: ImportJob, progress: Callable[[ImportJob], None] | None = None) -> ImportJob:
    """Import the job's file with its mapping and options; a failure marks it failed and raises."""
    is_pg = _is_pg(db.session.connection())
    if not is_pg:
        q.check_sqlite_version()
    rerun = job.started_at is not None
    try:
        info = file_info(job)
        checker = RowChecker(info.header, job.mapping, use_consent=job.options.get("consent", "column") == "column")
        job.status = "running"
        job.started_at = utcnow()
        job.error = ""
        job.processed_rows = job.created_count = job.updated_count = 0
        job.unchanged_count = job.rejected_count = job.consent_unrecognised_count = 0
        job.consent_unrecognised_values = {}
        job.total_rows = count_rows(job.stored_path, info)
        rejected_path = rejected_path_for(job)
        job.rejected_path = str(rejected_path)
        db.session.commit()
        plan = make_plan(job, rerun)
        db.session.commit()

        def report() -> None:
            if progress:
                progress(job)
                # End the read progress() may have begun, so this session is never left idle
                # in a transaction while the writers work.
                db.session.commit()

        report()
        totals = dict.fromkeys(COUNTERS, 0)
        unrecognised: Counter = Counter()
        total_rows = job.total_rows
        chunks = prefetch(info, job.stored_path, checker, q.copy_text if is_pg else q.sqlite_rows)
        written_chunks = write_in_parallel(chunks, plan, job.id, PG_WRITERS) if is_pg \
            else write_serially(chunks, plan, job.id)
        # Closed on the way out, even on an error: writers finish, then the reader stops.
        with closing(chunks), closing(written_chunks), \
                rejected_path.open("w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerow([*info.header, "reason"])
            for rejected_text, written in written_chunks:
                out.write(rejected_text)
                if written.suppressed:  # after the chunk's other rejections
                    out.write(rejected_csv(written.suppressed))
                out.flush()
                # The chunk's transaction already stored these; mirror them without a query
                # (and without marking the job dirty: the writers own those columns now).
                for name, count in written.counts.items():
                    totals[name] += count
                    set_committed_value(job, name, totals[name])
                unrecognised.update(written.unrecognised)
                total_rows = max(total_rows, totals["processed_rows"])
                set_committed_value(job, "total_rows", total_rows)
                if plan.announce or plan.announce_signatures:  # committed: the dispatch job takes them
                    events.wake()
                report()
        job.total_rows = job.processed_rows
        job.consent_unrecognised_values = dict(unrecognised.most_common(UNRECOGNISED_VALUES_KEPT))
        job.status = "done"
        job.finished_at = utcnow()
        db.session.commit()
        if progress:
            progress(job)
        return job
    except Exception as exc:
        db.session.rollback()
        job = db.session.get(ImportJob, job.id)
        job.status = "failed"
        job.error = str(exc)[:2000] or exc.__class__.__name__
        job.finished_at = utcnow()
        db.session.commit()
        raise

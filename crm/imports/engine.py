"""Run an import: read the file in chunks, judge each row, and upsert each chunk in bulk.

Shared by the RQ job (workers/imports.py) and the `crm import supporters` command. Every row
is accounted for: total = created + updated + unchanged + rejected.
"""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crm.exports import safe_text
from crm.extensions import db
from crm.imports import queries as q
from crm.imports.reader import FileInfo, count_rows, iter_chunks
from crm.imports.rows import RowChecker, Staged, email_hash
from crm.models import ConsentWording, ImportJob, Petition, Tag, utcnow

SUPPRESSION_BATCH = 1000


@dataclass
class ChunkResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[list[str], str]] = field(default_factory=list)


@dataclass
class Plan:
    """What to do with accepted rows, resolved once per run from the job's options."""

    source: str
    petition_id: int | None = None
    wording: str = ""
    wording_version: int | None = None
    wording_id: int | None = None
    tag_ids: list[int] = field(default_factory=list)
    rerun: bool = False


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


def make_plan(job: ImportJob, rerun: bool) -> Plan:
    options = job.options
    plan = Plan(source=f"import:{job.id}", rerun=rerun,
                wording=f"Imported with consent from {job.filename}")
    petition = db.session.get(Petition, options["petition_id"]) if options.get("petition_id") else None
    if petition is not None:
        plan.petition_id = petition.id
        if options.get("petition_wording"):
            plan.wording = petition.consent_wording
            plan.wording_version = petition.consent_wording_version
            plan.wording_id = db.session.scalar(db.select(ConsentWording.id).filter_by(
                petition_id=petition.id, version=petition.consent_wording_version))
    names = parse_tags(options.get("tags", ""))
    if names:
        now = _db_time(utcnow())
        for name in names:
            db.session.execute(q.CREATE_TAG, {"name": name, "now": now})
        plan.tag_ids = list(db.session.scalars(db.select(Tag.id).where(Tag.name.in_(names))))
    return plan


def _is_pg() -> bool:
    return db.engine.dialect.name == "postgresql"


def _db_time(value):
    return value if _is_pg() else q.sqlite_time(value)


def suppressed_emails(emails: list[str]) -> set[str]:
    """Which of these normalised addresses are suppressed: hashes computed here, compared in SQL."""
    if not emails or db.session.execute(q.ANY_SUPPRESSION).first() is None:
        return set()
    by_hash = {email_hash(e): e for e in emails}
    hashes = list(by_hash)
    found: set[str] = set()
    for start in range(0, len(hashes), SUPPRESSION_BATCH):
        batch = hashes[start:start + SUPPRESSION_BATCH]
        found.update(db.session.scalars(q.SUPPRESSED_HASHES, {"hashes": batch}))
    return {by_hash[h] for h in found}


def stage_rows(rows: list[Staged]) -> None:
    """Load accepted rows into the TEMP staging table, in the session's transaction."""
    raw = db.session.connection().connection.driver_connection
    if _is_pg():
        with raw.cursor() as cursor:
            cursor.execute(q.CREATE_STAGE_PG)
            # Pre-formatted text blocks: several times faster than write_row per row here.
            line = q.copy_line
            with cursor.copy(q.COPY_STAGE_PG) as copy:
                for start in range(0, len(rows), 5000):
                    copy.write("".join([line((r.email, r.first_name, r.last_name, r.postal_code, r.country,
                                              r.consent, r.comment, r.signed_at))
                                        for r in rows[start:start + 5000]]))
            cursor.execute(q.ANALYZE_STAGE_PG)
    else:
        cursor = raw.cursor()
        try:
            cursor.execute(q.CREATE_STAGE_SQLITE)
            cursor.execute(q.CLEAR_STAGE_SQLITE)
            cursor.executemany(q.INSERT_STAGE_SQLITE, [
                (r.email, r.first_name, r.last_name, r.postal_code, r.country, int(r.consent),
                 r.comment, q.sqlite_time(r.signed_at)) for r in rows])
        finally:
            cursor.close()


def apply_chunk(rows: list[Staged], plan: Plan) -> tuple[int, int, int]:
    """Upsert one chunk of accepted rows; return (created, updated, unchanged)."""
    if not rows:
        return 0, 0, 0
    stage_rows(rows)
    now = _db_time(utcnow())
    params = {"source": plan.source, "now": now}
    if _is_pg():
        created, updated, previously = db.session.execute(q.UPSERT_CHUNK_PG, {
            **params, "wording": plan.wording, "wording_version": plan.wording_version,
            "wording_id": plan.wording_id, "petition_id": plan.petition_id, "tag_ids": plan.tag_ids}).one()
        created += previously
        return created, updated, len(rows) - created - updated
    previously = db.session.scalar(q.PREVIOUSLY_CREATED, params) if plan.rerun else 0
    updated = db.session.execute(q.UPDATE_EXISTING, params).rowcount
    created = db.session.execute(q.INSERT_NEW, params).rowcount + previously
    db.session.execute(q.INSERT_CONSENT_EVENTS, {
        **params, "wording": plan.wording, "wording_version": plan.wording_version,
        "wording_id": plan.wording_id})
    db.session.execute(q.SUBSCRIBE_OPTED_IN, params)
    if plan.petition_id is not None:
        db.session.execute(q.INSERT_SIGNATURES, {**params, "petition_id": plan.petition_id})
    for tag_id in plan.tag_ids:
        db.session.execute(q.INSERT_TAGS, {"tag_id": tag_id})
    return created, updated, len(rows) - created - updated


Judged = tuple[list[Staged], list[tuple[list[str], str]]]


def check_rows(checker: RowChecker, rows: list[list[str]]) -> Judged:
    """Split a chunk into accepted rows and (row, reason) rejections, by the file alone."""
    accepted: list[Staged] = []
    rejected: list[tuple[list[str], str]] = []
    check = checker.check
    for row in rows:
        result = check(row)
        if isinstance(result, str):
            rejected.append((row, result))
        else:
            accepted.append(result)
    return accepted, rejected


def drop_suppressed(accepted: list[Staged], rejected: list[tuple[list[str], str]]) -> Judged:
    """Move suppressed addresses from accepted to rejected (they are never stored)."""
    suppressed = suppressed_emails([r.email for r in accepted])
    if suppressed:
        rejected.extend((r.row, "suppressed") for r in accepted if r.email in suppressed)
        accepted = [r for r in accepted if r.email not in suppressed]
    return accepted, rejected


def judge_chunk(checker: RowChecker, rows: list[list[str]]) -> Judged:
    """Split a chunk into accepted rows and (row, reason) rejections, suppression included."""
    return drop_suppressed(*check_rows(checker, rows))


def prefetch(info: FileInfo, path: str, checker: RowChecker, depth: int = 2
             ) -> Iterator[tuple[list[list[str]], list[Staged], list[tuple[list[str], str]]]]:
    """Read and check the next chunks in a thread while the database writes this one.

    Parsing and checking are Python work; the upsert mostly waits on PostgreSQL or SQLite's C
    code, which releases the GIL, so on two cores the two overlap. Errors are re-raised here.
    """
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for chunk in iter_chunks(path, info):
                if stop.is_set():
                    return
                results.put((chunk, *check_rows(checker, chunk)))
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


def rejected_path_for(job: ImportJob) -> Path:
    from flask import current_app

    folder = Path(current_app.instance_path) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{Path(job.stored_path).stem}-{job.id}-rejected.csv"


def run_import(job: ImportJob, progress: Callable[[ImportJob], None] | None = None) -> ImportJob:
    """Import the job's file with its mapping and options; a failure marks it failed and raises."""
    if not _is_pg():
        q.check_sqlite_version()
    rerun = job.started_at is not None
    try:
        info = file_info(job)
        checker = RowChecker(info.header, job.mapping, use_consent=job.options.get("consent", "column") == "column")
        job.status = "running"
        job.started_at = utcnow()
        job.error = ""
        job.processed_rows = job.created_count = job.updated_count = 0
        job.unchanged_count = job.rejected_count = 0
        job.total_rows = count_rows(job.stored_path, info)
        rejected_path = rejected_path_for(job)
        job.rejected_path = str(rejected_path)
        db.session.commit()
        plan = make_plan(job, rerun)
        db.session.commit()
        if progress:
            progress(job)
        with rejected_path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([*info.header, "reason"])
            for chunk, accepted, rejected in prefetch(info, job.stored_path, checker):
                accepted, rejected = drop_suppressed(accepted, rejected)
                created, updated, unchanged = apply_chunk(accepted, plan)
                # Cells that a spreadsheet would run as a formula get a leading ' (as exports do).
                writer.writerows([*map(safe_text, row), reason] for row, reason in rejected)
                out.flush()
                job.created_count += created
                job.updated_count += updated
                job.unchanged_count += unchanged
                job.rejected_count += len(rejected)
                job.processed_rows += len(chunk)
                job.total_rows = max(job.total_rows, job.processed_rows)
                db.session.commit()  # the chunk and its progress, together
                if progress:
                    progress(job)
        job.total_rows = job.processed_rows
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

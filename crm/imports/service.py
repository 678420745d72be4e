"""Import rules the views, the CLI and the job share: upload, mapping, preview, queueing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from werkzeug.utils import secure_filename

from crm.extensions import db
from crm.imports.engine import consent_evidence, file_info, job_petition, judge_chunk, parse_tags
from crm.imports.reader import UnreadableFile, file_format, iter_chunks, sniff
from crm.imports.rows import FIELDS, RowChecker, consent_meaning, guess_mapping, unrecognised_consent
from crm.models import ImportJob, Petition

PREVIEW_ROWS = 20
CONSENT_TREATMENTS = {
    "column": "Use the consent column: rows saying yes (yes, y, true, 1, x, oui, ja, sí, sim, tak...) are opted in, "
              "the rest never subscribed",
    "none": "Ignore consent: import everyone as never subscribed",
}


class ImportSetupError(ValueError):
    """A problem with the mapping or options, worded for staff."""


def imports_folder() -> Path:
    folder = Path(current_app.instance_path) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def create_import(stream, filename: str, staff_id: int | None) -> ImportJob:
    """Store an upload under instance/imports/<uuid>.<ext>, sniff it, and record an ImportJob.

    An unreadable file raises UnreadableFile and leaves nothing behind (file or row).
    """
    fmt = file_format(filename)
    path = imports_folder() / f"{uuid.uuid4().hex}.{fmt}"
    try:
        stream.save(str(path)) if hasattr(stream, "save") else path.write_bytes(stream.read())
        info = sniff(path, fmt)
        # Read the first rows too, so a file that sniffs but cannot be parsed fails now.
        next(iter_chunks(path, info, chunk_rows=PREVIEW_ROWS), None)
    except UnreadableFile:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # any parser failure means the same thing to staff
        path.unlink(missing_ok=True)
        raise UnreadableFile(f"The file could not be read: {exc}") from None
    job = ImportJob(filename=secure_filename(filename) or f"upload.{fmt}", stored_path=str(path),
                    status="uploaded", mapping=guess_mapping(info.header),
                    options={"file": info.as_options(), "consent": "column", "tags": ""},
                    created_by_id=staff_id)
    db.session.add(job)
    db.session.commit()
    return job


def register_file(path: str, staff_id: int | None = None) -> ImportJob:
    """Record an ImportJob for a file already on disk (the CLI), without copying it."""
    fmt = file_format(path)
    info = sniff(path, fmt)
    job = ImportJob(filename=Path(path).name, stored_path=str(Path(path).resolve()), status="uploaded",
                    mapping=guess_mapping(info.header),
                    options={"file": info.as_options(), "consent": "column", "tags": ""},
                    created_by_id=staff_id)
    db.session.add(job)
    db.session.flush()
    return job


def check_mapping(header: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """Return a clean mapping for this header, or raise ImportSetupError naming the problem."""
    clean = {column: mapping.get(column, "ignore") for column in header}
    for column, field_name in clean.items():
        if field_name not in FIELDS:
            raise ImportSetupError(f"Unknown field {field_name!r} for column {column!r}.")
    used = [f for f in clean.values() if f != "ignore"]
    if "email" not in used:
        raise ImportSetupError("Map one column to Email: every supporter needs an address.")
    for name in set(used):
        if used.count(name) > 1:
            raise ImportSetupError(f"{FIELDS[name]} is mapped to more than one column.")
    return clean


def configure(job: ImportJob, mapping: dict[str, str], *, petition_id: int | None = None,
              petition_wording: bool = False, tags: str = "", consent: str = "column") -> None:
    """Save the mapping and options on an uploaded import (not yet committed)."""
    info = file_info(job)
    job.mapping = check_mapping(info.header, mapping)
    if petition_id is not None and db.session.get(Petition, petition_id) is None:
        raise ImportSetupError("That petition no longer exists.")
    if consent not in CONSENT_TREATMENTS:
        raise ImportSetupError("Choose how to treat consent.")
    job.options = {**job.options, "petition_id": petition_id, "petition_wording": bool(petition_wording),
                   "tags": ", ".join(parse_tags(tags)), "consent": consent}


@dataclass
class PreviewRow:
    number: int
    values: dict[str, str]
    problem: str  # why the row would be rejected
    note: str = ""  # what a kept row would not get (consent, when its value is neither yes nor no)


def preview(job: ImportJob, limit: int = PREVIEW_ROWS) -> list[PreviewRow]:
    """Judge the first rows exactly as the job will (suppression included); nothing is written."""
    info = file_info(job)
    checker = RowChecker(info.header, job.mapping, use_consent=job.options.get("consent") == "column")
    rows = next(iter_chunks(job.stored_path, info, chunk_rows=limit), [])
    problems = {id(row): reason for row, reason in judge_chunk(checker, rows).rejected}
    shown = [(c, f) for c, f in job.mapping.items() if f != "ignore"]
    index = {c: i for i, c in enumerate(info.header)}
    consent_at = checker.index.get("consent")
    out = []
    for n, row in enumerate(rows, start=1):
        note = ""
        if consent_at is not None and consent_meaning(row[consent_at]) is None:
            note = unrecognised_consent(row[consent_at])
        out.append(PreviewRow(n, {f: row[index[c]] for c, f in shown}, problems.get(id(row), ""), note))
    return out


@dataclass
class ConsentPlan:
    """What the map screen says an import will record as consent, before it runs."""

    uses_column: bool
    example_reason: str
    wording: str


def consent_plan(job: ImportJob) -> ConsentPlan:
    """The consent event an opted-in row of this import gets (its reason shown for the value "yes")."""
    evidence = consent_evidence(job, job_petition(job))
    uses_column = job.options.get("consent", "column") == "column" and "consent" in job.mapping.values()
    return ConsentPlan(uses_column, evidence.reason("yes"), evidence.wording)


def queue_import(job: ImportJob) -> None:
    """Mark the import queued and hand it to a worker."""
    from crm.queues import RUN_IMPORT, enqueue

    job.status = "queued"
    db.session.commit()
    try:
        enqueue(RUN_IMPORT, job.id, job_timeout=6 * 3600)
    except Exception:
        job.status = "uploaded"  # not queued after all; staff can try again
        db.session.commit()
        raise


def delete_files(job: ImportJob) -> None:
    for path in (job.stored_path, job.rejected_path):
        if path:
            Path(path).unlink(missing_ok=True)


__all__ = ["UnreadableFile", "create_import", "configure", "preview", "queue_import", "ImportSetupError"]

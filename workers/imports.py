"""The import job: runs crm.imports.engine.run_import in the worker, with progress in job.meta."""

from __future__ import annotations

from rq import get_current_job

from crm.extensions import db
from crm.models import ImportJob
from workers import job_app


def run_import(import_job_id: int) -> dict:
    """Import the file of ImportJob `import_job_id`; a failure marks it failed and raises."""
    from crm.imports.engine import run_import as run

    app = job_app()
    with app.app_context():
        job = db.session.get(ImportJob, import_job_id)
        if job is None:
            raise LookupError(f"import {import_job_id} does not exist")
        if job.status == "done":  # delivered twice: the first run already finished
            return {"created": job.created_count, "updated": job.updated_count,
                    "unchanged": job.unchanged_count, "rejected": job.rejected_count}
        rq_job = get_current_job()

        def progress(job: ImportJob) -> None:
            if rq_job is not None:
                rq_job.meta.update(processed=job.processed_rows, total=job.total_rows, status=job.status)
                rq_job.save_meta()

        job = run(job, progress)
        return {"created": job.created_count, "updated": job.updated_count,
                "unchanged": job.unchanged_count, "rejected": job.rejected_count}

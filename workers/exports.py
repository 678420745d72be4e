"""The export job: builds a large engagement export's file in the worker, with progress in job.meta."""

from __future__ import annotations

from rq import get_current_job

from workers import job_app


def run_export(export_job_id: int) -> dict:
    """Build the file of ExportJob `export_job_id`; a failure marks it failed and raises."""
    from reports.exports import build

    app = job_app()
    with app.app_context():
        job = build(export_job_id)
        if job is None:
            raise LookupError(f"export {export_job_id} does not exist")
        rq_job = get_current_job()
        if rq_job is not None:
            rq_job.meta.update(rows=job.rows_done, status=job.status)
            rq_job.save_meta()
        return {"rows": job.rows_done, "status": job.status}

"""API jobs: counting again for a stale total_records."""

from __future__ import annotations

from workers import job_app


def recount_people_job(filter_text: str) -> int:
    """Count the API's people for a filter whose cached total went stale; returns the count."""
    from api.queries import recount_people

    with job_app().app_context():
        return recount_people(filter_text)

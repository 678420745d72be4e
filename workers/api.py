"""API jobs: counting again for a stale total_records, and building the people rank index."""

from __future__ import annotations

from workers import job_app


def recount_people_job(filter_text: str) -> int:
    """Count the API's people for a filter whose cached total went stale; returns the count."""
    from api.queries import recount_people

    with job_app().app_context():
        return recount_people(filter_text)


def build_people_ranks_job() -> int:
    """Build the rank index of the API's people (api/queries.py); returns how many people it ranks."""
    from api.queries import build_ranks

    with job_app().app_context():
        return build_ranks().total

"""Feedback jobs: reading the bounce mailbox on demand (the periodic read is in workers/periodic.py)."""

from __future__ import annotations

from dataclasses import asdict

from workers import job_app


def fetch_bounces_job() -> dict:
    """Read the bounce mailbox once; returns the counts. Raises when the mailbox fails."""
    from feedback.mailbox import fetch

    with job_app().app_context():
        return asdict(fetch())

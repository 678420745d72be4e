"""Feedback jobs: applying the webhook intake, and reading the bounce mailbox on demand (the periodic
sweep and read are in workers/periodic.py)."""

from __future__ import annotations

from dataclasses import asdict

from workers import job_app


def fetch_bounces_job() -> dict:
    """Read the bounce mailbox once; returns the counts. Raises when the mailbox fails."""
    from feedback.mailbox import fetch

    with job_app().app_context():
        return asdict(fetch())


def apply_intake_job() -> dict:
    """Apply the feedback webhooks queued (feedback/intake.py) until none waits; returns the counts."""
    from feedback.intake import run_queued

    with job_app().app_context():
        return asdict(run_queued())

"""Campaign jobs: start (snapshot and batches), send a batch, and test sends. (The sweep that
recovers from dead workers is a periodic task: workers/periodic.py.)

Each takes ids, opens its own app context and raises on failure. None relies on running only
once: the guarantees live in the database (see campaigns/pipeline.py).
"""

from __future__ import annotations

from rq import get_current_job

from workers import job_app


def start_campaign_job(campaign_id: int, version: int | None = None) -> int:
    """Snapshot the campaign's recipients and enqueue its batches; returns the recipient count."""
    from campaigns.pipeline import start_campaign

    with job_app().app_context():
        return start_campaign(campaign_id, version)


def send_batch_job(campaign_id: int, after_id: int, upto_id: int) -> int:
    """Send one range of the campaign's messages; returns how many were sent."""
    from campaigns.pipeline import send_batch

    job = get_current_job()
    with job_app().app_context():
        return send_batch(campaign_id, after_id, upto_id, job_id=job.id if job else None)


def send_test_job(campaign_id: int, addresses: list[str], supporter_id: int | None = None) -> list[str]:
    """Send the campaign, marked [TEST], to staff addresses; returns the Message-IDs."""
    from campaigns.lifecycle import deliver_test

    with job_app().app_context():
        return deliver_test(campaign_id, addresses, supporter_id)

"""Outbound webhook jobs: turning pushed events into deliveries, and one delivery attempt."""

from __future__ import annotations

from workers import job_app


def dispatch_webhooks_job() -> int:
    """Drain the pushed events into deliveries and queue them; returns how many deliveries were made."""
    from outbound import dispatch

    with job_app().app_context():
        return dispatch.dispatch()


def deliver_webhook_job(delivery_id: int) -> str:
    """Make one attempt at a delivery; raises when it failed, so RQ retries it on its schedule."""
    from outbound import delivery

    with job_app().app_context():
        return delivery.deliver(delivery_id)


"""Petition jobs: the double opt-in confirmation mail (crm.petitions.confirmation)."""

from __future__ import annotations

from workers import job_app


def send_confirmation_job(confirmation_id: int, reminder: bool = False) -> bool:
    """Send one signer's confirmation mail (or its reminder) now; raises if the relay refuses."""
    from crm.petitions.confirmation import send_mail

    with job_app().app_context():
        return send_mail(confirmation_id, reminder)

"""The suppression list: hashes of addresses that must never be mailed or resubscribed."""

from __future__ import annotations

import hashlib

from sqlalchemy import exists

from crm.extensions import db
from crm.models import Supporter, Suppression
from crm.supporters import withdrawn


def email_hash(normalised_email: str) -> str:
    """SHA-256 hex of the normalised address (the list never stores the address itself)."""
    return hashlib.sha256(normalised_email.encode("utf-8")).hexdigest()


def is_suppressed(normalised_email: str) -> bool:
    return bool(db.session.scalar(
        db.select(exists().where(Suppression.email_hash == email_hash(normalised_email)))
    ))


def suppress(normalised_email: str, reason: str = "erased") -> None:
    """Add the address to the list (idempotent), in the caller's transaction; a sending campaign
    skips its supporter from the commit on."""
    if not is_suppressed(normalised_email):
        db.session.add(Suppression(email_hash=email_hash(normalised_email), reason=reason))
    withdrawn.announce(db.session, db.session.scalars(
        db.select(Supporter.id).where(Supporter.email == normalised_email)))

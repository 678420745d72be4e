"""The one place email_status changes: append a consent event and derive the status from it."""

from __future__ import annotations

from datetime import datetime

from crm import events
from crm.extensions import db
from crm.models import CONSENT_ACTIONS, STATUS_AFTER, ConsentEvent, Supporter, utcnow
from crm.supporters import withdrawn


def record_consent(
    supporter: Supporter,
    action: str,
    source: str,
    *,
    wording: str = "",
    wording_version: int | None = None,
    wording_id: int | None = None,
    reason: str = "",
    ip: str | None = None,
    user_agent: str | None = None,
    campaign_id: int | None = None,
    at: datetime | None = None,
) -> ConsentEvent:
    """Append a consent event and update the supporter's email status, in the caller's transaction.

    A withdrawal (opt_out, bounce, complaint) is announced to sending batches once the caller
    commits, so a campaign sending right now skips them too (crm/supporters/withdrawn.py)."""
    if action not in CONSENT_ACTIONS:
        raise ValueError(f"unknown consent action {action!r}")
    event = ConsentEvent(
        supporter=supporter, action=action, source=source, wording=wording,
        wording_version=wording_version, wording_id=wording_id, reason=reason, ip=ip,
        user_agent=(user_agent or "")[:400] or None, campaign_id=campaign_id, created_at=at or utcnow(),
    )
    db.session.add(event)
    before, supporter.email_status = supporter.email_status, STATUS_AFTER.get(action, supporter.email_status)
    if before != supporter.email_status and action in ("opt_in", "resubscribe", "opt_out"):
        # After the caller's commit (crm/events.py; the id of a new supporter is known by then);
        # bounces and complaints are told by feedback/.
        events.emit("supporter.subscribed" if action != "opt_out" else "supporter.unsubscribed",
                    {"supporter_id": supporter, "source": source, "campaign_id": campaign_id})
    if supporter.email_status != "subscribed" and supporter.id is not None:
        withdrawn.announce(db.session, [supporter.id])
    return event

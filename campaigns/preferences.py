"""The preference page's rules: change names and postal code, pause updates, unsubscribe.

Reached by a signed link in every message's footer (campaigns.tokens), with no login. Every
change is a consent event, so the supporter's history shows what they asked for, when, from
which message, with which words: `update_details` (names, postal code; the values themselves
live on the supporter row), `pause` (for how long, until when), or the unsubscribe's `opt_out`
through the same service as the unsubscribe link (campaigns.optout).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crm.extensions import db
from crm.models import Message, Supporter
from crm.supporters.consent import record_consent
from crm.supporters.service import ProfileInvalid, update_supporter

log = logging.getLogger(__name__)

SOURCE = "preference_page"
PAUSE_DAYS = (30, 60, 90)
DETAIL_FIELDS = {"first_name": "first name", "last_name": "last name", "postal_code": "postal code"}


@dataclass(frozen=True)
class Person:
    """What the page shows and acts on: the supporter the message went to, and that message's campaign."""

    supporter: Supporter
    campaign_id: int
    message_id: int

    @property
    def paused_until(self) -> datetime | None:
        until = self.supporter.paused_until
        if until is None:
            return None
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
        return until if until > datetime.now(UTC) else None


def person_for(message_id: int) -> Person | None:
    """The supporter a message went to, or None if the message is gone or they were erased."""
    message = db.session.get(Message, message_id)
    if message is None or message.supporter_id is None:
        return None
    supporter = db.session.get(Supporter, message.supporter_id)
    if supporter is None or supporter.erased_at is not None or not supporter.email:
        return None
    return Person(supporter, message.campaign_id, message.id)


def update_details(person: Person, *, first_name: str, last_name: str, postal_code: str,
                   ip: str | None = None, user_agent: str | None = None) -> list[str]:
    """Save names and postal code by the supporter service's rules; returns what changed (raises ProfileInvalid)."""
    supporter = person.supporter
    wanted = {"first_name": (first_name or "").strip(), "last_name": (last_name or "").strip(),
              "postal_code": (postal_code or "").strip().upper()}
    changed = [label for name, label in DETAIL_FIELDS.items() if wanted[name] != (getattr(supporter, name) or "")]
    if not changed:
        return []
    record_consent(supporter, "update_details", SOURCE, campaign_id=person.campaign_id, ip=_clip(ip),
                   user_agent=user_agent, wording=f"Changed on the preference page: {', '.join(changed)}")
    try:
        # Commits the consent event with the new values, or raises with nothing written.
        update_supporter(supporter, email=supporter.email, country=supporter.country, **wanted)
    except ProfileInvalid:
        db.session.rollback()
        raise
    log.info("preference page: supporter %s changed %s", supporter.id, ", ".join(changed))
    return changed


def pause(person: Person, days: int, *, ip: str | None = None, user_agent: str | None = None,
          now: datetime | None = None) -> datetime:
    """Leave the supporter out of every campaign snapshot for `days` days (30, 60 or 90); returns the end."""
    if days not in PAUSE_DAYS:
        raise ValueError(f"pause for one of {PAUSE_DAYS} days, not {days!r}")
    until = (now or datetime.now(UTC)) + timedelta(days=days)
    supporter = person.supporter
    supporter.paused_until = until
    record_consent(supporter, "pause", SOURCE, campaign_id=person.campaign_id, ip=_clip(ip), user_agent=user_agent,
                   wording=pause_wording(days), reason=f"until {until.date().isoformat()}")
    db.session.commit()
    log.info("preference page: supporter %s paused for %s days", supporter.id, days)
    return until


def resume(person: Person, *, ip: str | None = None, user_agent: str | None = None) -> None:
    """End a pause early: the next campaign includes them again."""
    supporter = person.supporter
    if person.paused_until is None:
        return
    supporter.paused_until = None
    record_consent(supporter, "pause", SOURCE, campaign_id=person.campaign_id, ip=_clip(ip), user_agent=user_agent,
                   wording=RESUME_BUTTON, reason="ended early")
    db.session.commit()


def pause_wording(days: int) -> str:
    """The pause button's words, kept as the consent event's wording."""
    return f"Pause email updates for {days} days"


RESUME_BUTTON = "Start my email updates again now"


def _clip(value: str | None) -> str | None:
    return value[:64] if value else None

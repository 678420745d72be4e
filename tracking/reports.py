"""Opens and clicks per campaign, for its page: unique and total, by people and all."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select

from crm.extensions import db
from crm.models import EngagementEvent


@dataclass(frozen=True)
class Counts:
    unique_human: int = 0
    unique_all: int = 0
    total_human: int = 0
    total_all: int = 0


@dataclass(frozen=True)
class Engagement:
    opens: Counts
    clicks: Counts


def campaign_engagement(campaign_id: int) -> Engagement:
    """Unique (messages) and total (events) opens and clicks of one campaign, human and all."""
    event = EngagementEvent
    human = ~event.is_machine
    # One pass over the campaign's open and click rows (ix_engagement_event_campaign_kind).
    rows = db.session.execute(
        select(event.kind,
               func.count(func.distinct(case((human, event.message_id)))),
               func.count(func.distinct(event.message_id)),
               func.count(case((human, 1))),
               func.count())
        .where(event.campaign_id == campaign_id, event.kind.in_(("open", "click")))
        .group_by(event.kind)).all()
    found = {kind: Counts(*numbers) for kind, *numbers in rows}
    return Engagement(found.get("open", Counts()), found.get("click", Counts()))

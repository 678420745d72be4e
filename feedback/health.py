"""List health: bounce, complaint and unsubscribe rates per campaign and over 30 days.

Rates are per message sent (accepted by the relay) plus the messages the relay refused as
"user unknown", which are bounces too. Counts come from feedback_event (distinct messages, so a
relay repeating itself counts once), from the campaigns' final counters, and from consent
events carrying a campaign (unsubscribes); no query reads a campaign's messages one by one
except the live sent count of a campaign still sending (an index range count).

Gmail and Yahoo warn bulk senders at 0.1% complaints and enforce 0.3% (FACTS: their sender
requirements): those are the lines on the chart and the thresholds of the banner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, func, select

from crm.extensions import db
from crm.models import Campaign, ConsentEvent, FeedbackEvent, Message, Suppression, utcnow

WARN_RATE = 0.001
LIMIT_RATE = 0.003
WINDOW_DAYS = 30
CAMPAIGNS_SHOWN = 12
LIVE = ("sending", "paused")


@dataclass
class Health:
    """Counts for one campaign, or for a window of them."""

    sent: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    campaign: Campaign | None = None

    def rate(self, count: int) -> float:
        return count / self.sent if self.sent else 0.0

    @property
    def hard_rate(self) -> float:
        return self.rate(self.hard)

    @property
    def soft_rate(self) -> float:
        return self.rate(self.soft)

    @property
    def bounce_rate(self) -> float:
        return self.rate(self.hard + self.soft)

    @property
    def complaint_rate(self) -> float:
        return self.rate(self.complaints)

    @property
    def unsubscribe_rate(self) -> float:
        return self.rate(self.unsubscribes)

    @property
    def complaint_level(self) -> str:
        """ok, warn (past 0.1%) or over (past 0.3%)."""
        rate = self.complaint_rate
        return "over" if rate > LIMIT_RATE else "warn" if rate > WARN_RATE else "ok"

    def add(self, other: Health) -> None:
        for name in ("sent", "hard", "soft", "complaints", "unsubscribes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def campaigns_health(campaigns: list[Campaign]) -> list[Health]:
    """Health of each campaign given, in the same order."""
    ids = [c.id for c in campaigns]
    if not ids:
        return []
    by_id = {c.id: Health(campaign=c) for c in campaigns}
    live = [c.id for c in campaigns if c.status in LIVE]
    live_sent = dict(db.session.execute(
        select(Message.campaign_id, func.count()).where(Message.campaign_id.in_(live), Message.status == "sent")
        .group_by(Message.campaign_id)).all()) if live else {}
    for c in campaigns:
        by_id[c.id].sent = live_sent.get(c.id, 0) if c.status in LIVE else c.sent_count
    refused = case((FeedbackEvent.provider == "smtp", 1), else_=0)
    rows = db.session.execute(
        select(FeedbackEvent.campaign_id, FeedbackEvent.kind, FeedbackEvent.hard, refused,
               func.count(func.distinct(FeedbackEvent.message_id)))
        .where(FeedbackEvent.campaign_id.in_(ids), FeedbackEvent.outcome == "applied",
               FeedbackEvent.kind.in_(("bounce", "complaint")))
        .group_by(FeedbackEvent.campaign_id, FeedbackEvent.kind, FeedbackEvent.hard, refused)).all()
    for campaign_id, kind, hard, was_refused, count in rows:
        health = by_id[campaign_id]
        if kind == "complaint":
            health.complaints += count
        elif hard:
            health.hard += count
            if was_refused:
                health.sent += count  # refused at the door: a bounce the sent count leaves out
        else:
            health.soft += count
    for campaign_id, count in db.session.execute(
            select(ConsentEvent.campaign_id, func.count()).where(
                ConsentEvent.campaign_id.in_(ids), ConsentEvent.action == "opt_out")
            .group_by(ConsentEvent.campaign_id)).all():
        by_id[campaign_id].unsubscribes = count
    return [by_id[i] for i in ids]


def recent_campaigns(limit: int = CAMPAIGNS_SHOWN, since=None) -> list[Campaign]:
    query = select(Campaign).where(Campaign.started_at.is_not(None))
    if since is not None:
        query = query.where(Campaign.started_at >= since)
    return list(db.session.scalars(query.order_by(Campaign.started_at.desc(), Campaign.id.desc()).limit(limit)))


def window(days: int = WINDOW_DAYS) -> Health:
    """Totals over the campaigns started in the last `days` days."""
    total = Health()
    for health in campaigns_health(recent_campaigns(limit=500, since=utcnow() - timedelta(days=days))):
        total.add(health)
    return total


def suppressed_this_month() -> list[dict]:
    """Addresses added to the suppression list since the 1st (UTC): per reason and campaign."""
    now = utcnow()
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows = db.session.execute(
        select(Suppression.reason, Suppression.campaign_id, Campaign.name, func.count())
        .outerjoin(Campaign, Campaign.id == Suppression.campaign_id)
        .where(Suppression.created_at >= first)
        .group_by(Suppression.reason, Suppression.campaign_id, Campaign.name)
        .order_by(func.count().desc())).all()
    return [{"reason": r, "campaign_id": c, "campaign": n, "count": k} for r, c, n, k in rows]


def last_campaign_warning() -> Health | None:
    """The latest campaign's health if its complaints passed 0.1%, for the campaign pages' banner."""
    latest = recent_campaigns(limit=1)
    if not latest:
        return None
    (health,) = campaigns_health(latest)
    return health if health.complaint_rate > WARN_RATE else None


def chart(healths: list[Health], width: int = 640, height: int = 220) -> dict:
    """Geometry for the complaint-rate chart: oldest campaign left, threshold lines across."""
    shown = list(reversed(healths))
    top = max([LIMIT_RATE * 1.5, *(h.complaint_rate * 1.15 for h in shown)])
    left, bottom, plot_h = 56, height - 28, height - 48
    slot = (width - left - 12) / max(1, len(shown))

    def y(rate: float) -> float:
        return round(bottom - plot_h * min(rate, top) / top, 1)

    bars = [{"x": round(left + i * slot + slot * 0.15, 1), "w": round(slot * 0.7, 1), "y": y(h.complaint_rate),
             "h": round(bottom - y(h.complaint_rate), 1), "level": h.complaint_level, "health": h,
             "label": (h.campaign.name if h.campaign else "")[:14]} for i, h in enumerate(shown)]
    lines = [{"rate": rate, "y": y(rate), "label": label} for rate, label in
             ((WARN_RATE, "0.1% warning"), (LIMIT_RATE, "0.3% limit"))]
    return {"width": width, "height": height, "left": left, "bottom": bottom, "bars": bars, "lines": lines,
            "top": top}

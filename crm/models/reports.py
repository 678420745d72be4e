"""Rolled-up counts the report pages read, the refresh's bookkeeping, and export jobs.

The roll-ups are derived data: reports/rollups.py rebuilds any row from the facts (message,
engagement_event, consent_event, feedback, signature), so a row can always be thrown away and
computed again. The pages read only these small tables, whatever the size of the facts.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, utcnow


class CampaignRollup(Base):
    """One campaign's counts: delivery, feedback, opens and clicks (human and all)."""

    __tablename__ = "campaign_rollup"

    campaign_id: Mapped[int] = mapped_column(primary_key=True)  # no FK: like message, see campaigns.py
    recipients: Mapped[int] = mapped_column(default=0)
    sent: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    unknown: Mapped[int] = mapped_column(default=0)
    suppressed: Mapped[int] = mapped_column(default=0)
    bounced_hard: Mapped[int] = mapped_column(default=0)
    bounced_soft: Mapped[int] = mapped_column(default=0)
    complaints: Mapped[int] = mapped_column(default=0)
    unsubscribes: Mapped[int] = mapped_column(default=0)
    opens_unique: Mapped[int] = mapped_column(default=0)
    opens_total: Mapped[int] = mapped_column(default=0)
    opens_unique_human: Mapped[int] = mapped_column(default=0)
    opens_total_human: Mapped[int] = mapped_column(default=0)
    clicks_unique: Mapped[int] = mapped_column(default=0)
    clicks_total: Mapped[int] = mapped_column(default=0)
    clicks_unique_human: Mapped[int] = mapped_column(default=0)
    clicks_total_human: Mapped[int] = mapped_column(default=0)
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignHourRollup(Base):
    """Opens and clicks in each hour of a campaign's first 72 hours (hour 0 starts at started_at)."""

    __tablename__ = "campaign_hour_rollup"

    campaign_id: Mapped[int] = mapped_column(primary_key=True)
    hour: Mapped[int] = mapped_column(primary_key=True)
    opens: Mapped[int] = mapped_column(default=0)
    opens_human: Mapped[int] = mapped_column(default=0)
    clicks: Mapped[int] = mapped_column(default=0)
    clicks_human: Mapped[int] = mapped_column(default=0)


class CampaignLinkRollup(Base):
    """Clicks on one link of a campaign (the URL the click event recorded)."""

    __tablename__ = "campaign_link_rollup"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(index=True)
    url: Mapped[str] = mapped_column(Text)
    clicks: Mapped[int] = mapped_column(default=0)
    clicks_human: Mapped[int] = mapped_column(default=0)
    unique_clicks: Mapped[int] = mapped_column(default=0)


class CampaignBreakdownRollup(Base):
    """A campaign's recipients grouped by petition signed or by country, with what they did."""

    __tablename__ = "campaign_breakdown_rollup"
    __table_args__ = (
        Index("ix_campaign_breakdown_rollup_campaign", "campaign_id", "dimension"),
        # The petition report reads "what this petition's signers did with later campaigns".
        Index("ix_campaign_breakdown_rollup_key", "dimension", "key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int]
    dimension: Mapped[str] = mapped_column(String(20))  # petition | country
    key: Mapped[str] = mapped_column(String(120))  # petition id, or ISO country code ("" unknown)
    recipients: Mapped[int] = mapped_column(default=0)
    opened: Mapped[int] = mapped_column(default=0)  # unique human opens
    clicked: Mapped[int] = mapped_column(default=0)  # unique human clicks
    unsubscribed: Mapped[int] = mapped_column(default=0)


class DailyRollup(Base):
    """One UTC day of list growth: supporters who became subscribed, and who stopped and why."""

    __tablename__ = "daily_rollup"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    gained: Mapped[int] = mapped_column(default=0)  # opt-ins and resubscribes of the not subscribed
    unsubscribes: Mapped[int] = mapped_column(default=0)
    bounces: Mapped[int] = mapped_column(default=0)
    complaints: Mapped[int] = mapped_column(default=0)


class PetitionDayRollup(Base):
    """One petition's signatures on one UTC day: new supporters, form signatures, opted in."""

    __tablename__ = "petition_day_rollup"
    __table_args__ = (Index("ix_petition_day_rollup_day", "day"),)

    petition_id: Mapped[int] = mapped_column(ForeignKey("petition.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    signatures: Mapped[int] = mapped_column(default=0)
    new_supporters: Mapped[int] = mapped_column(default=0)
    form_signatures: Mapped[int] = mapped_column(default=0)  # imports excluded
    opted_in: Mapped[int] = mapped_column(default=0)  # of the form signatures, agreed to updates


class PetitionSourceRollup(Base):
    """Signatures of a petition per source: utm parameters and the referring host."""

    __tablename__ = "petition_source_rollup"

    id: Mapped[int] = mapped_column(primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petition.id", ondelete="CASCADE"), index=True)
    utm_source: Mapped[str] = mapped_column(String(120), default="")
    utm_medium: Mapped[str] = mapped_column(String(120), default="")
    utm_campaign: Mapped[str] = mapped_column(String(120), default="")
    referrer_host: Mapped[str] = mapped_column(String(255), default="")
    signatures: Mapped[int] = mapped_column(default=0)


class PetitionRollup(Base):
    """One petition's signers who are subscribed now (their status moves with consent events)."""

    __tablename__ = "petition_rollup"

    petition_id: Mapped[int] = mapped_column(ForeignKey("petition.id", ondelete="CASCADE"), primary_key=True)
    subscribed_signers: Mapped[int] = mapped_column(default=0)


class ConsentSourceRollup(Base):
    """Consent events per action and source (consent_event is append-only: counts only grow)."""

    __tablename__ = "consent_source_rollup"

    action: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[str] = mapped_column(String(120), primary_key=True)
    events: Mapped[int] = mapped_column(default=0)


class RollupState(Base):
    """Where the last refresh got to: the newest fact ids it had seen, and when it ran.

    `unseen_ids` holds, per fact table, the ids just below its cursor that had no row at the
    last refresh (a transaction still open, or rolled back): the next refresh reads those
    and the ids above the cursor, nothing else."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    refreshed_at: Mapped[datetime | None]
    signature_cursor: Mapped[int] = mapped_column(default=0)
    consent_cursor: Mapped[int] = mapped_column(default=0)
    engagement_cursor: Mapped[int] = mapped_column(default=0)
    feedback_cursor: Mapped[int] = mapped_column(default=0)
    subscribed_now: Mapped[int] = mapped_column(default=0)
    last_duration_ms: Mapped[int] = mapped_column(default=0)
    unseen_ids: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


EXPORT_STATUSES = ("queued", "running", "done", "failed")


class ExportJob(Base):
    """An export too large to stream at once, built by a worker for its requester only."""

    __tablename__ = "export_job"

    id: Mapped[int] = mapped_column(primary_key=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"),
                                                        index=True)
    kind: Mapped[str] = mapped_column(String(20))  # engagement | summary
    format: Mapped[str] = mapped_column(String(10))  # csv | xlsx | parquet
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    rows_total: Mapped[int] = mapped_column(default=0)
    rows_done: Mapped[int] = mapped_column(default=0)
    stored_path: Mapped[str | None] = mapped_column(String(500))  # under instance/exports
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]

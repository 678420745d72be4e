"""Supporters, their consent history and tags."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Table, Text, func
from sqlalchemy.orm import Mapped, WriteOnlyMapped, mapped_column, relationship

from crm.models.base import Base, Timestamps, utcnow

EMAIL_STATUSES = ("subscribed", "unsubscribed", "bouncing", "complained", "never_subscribed")
CONSENT_ACTIONS = ("opt_in", "opt_out", "bounce", "complaint", "resubscribe", "pause", "update_details")

# Which email_status each consent action leaves a supporter in; the others (a pause, details
# changed on the preference page) are recorded as proof and leave it as it is.
STATUS_AFTER = {
    "opt_in": "subscribed",
    "resubscribe": "subscribed",
    "opt_out": "unsubscribed",
    "bounce": "bouncing",
    "complaint": "complained",
}

supporter_tag = Table(
    "supporter_tag",
    Base.metadata,
    Column("supporter_id", ForeignKey("supporter.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Supporter(Timestamps, Base):
    __tablename__ = "supporter"
    # Keyset pagination of the list sorted by last name: ORDER BY (last_name, id) walks this index.
    __table_args__ = (Index("ix_supporter_last_name_id", "last_name", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Normalised (trimmed, lower-cased) so uniqueness is case-insensitive on every database.
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    postal_code: Mapped[str] = mapped_column(String(20), default="", index=True)
    country: Mapped[str] = mapped_column(String(2), default="", index=True)
    email_status: Mapped[str] = mapped_column(String(20), default="never_subscribed", index=True)
    source: Mapped[str] = mapped_column(String(100), default="")
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notes: Mapped[str] = mapped_column(Text, default="")
    erased_at: Mapped[datetime | None]
    # Chosen on the preference page: no campaign snapshot includes them before this time.
    paused_until: Mapped[datetime | None]

    tags: Mapped[list[Tag]] = relationship(secondary=supporter_tag, back_populates="supporters")
    consent_events: WriteOnlyMapped[ConsentEvent] = relationship(
        back_populates="supporter", order_by="ConsentEvent.id"
    )

    @property
    def is_subscribed(self) -> bool:
        return self.email_status == "subscribed"

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)


# The segment postal-prefix condition's expression (crm/segments/compiler.py); PostgreSQL only,
# for its statistics and prefix range scans (migration 0007).
Index("ix_supporter_postal_upper", func.upper(Supporter.__table__.c.postal_code.collate("C"))).ddl_if(
    dialect="postgresql")


class ConsentEvent(Base):
    """Append-only proof of consent: what happened, how, and the exact words shown."""

    __tablename__ = "consent_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    supporter_id: Mapped[int] = mapped_column(
        ForeignKey("supporter.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(120))
    wording: Mapped[str] = mapped_column(Text, default="")  # copied: the proof outlives edits
    wording_version: Mapped[int | None]
    wording_id: Mapped[int | None] = mapped_column(ForeignKey("consent_wording.id"), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    # The campaign whose message carried the unsubscribe link or one-click header, if any.
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="SET NULL"))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    supporter: Mapped[Supporter] = relationship(back_populates="consent_events")


# The daily roll-up reads a day's consent events (reports/rollups.py).
Index("ix_consent_event_created_at", ConsentEvent.created_at)
# Unsubscribes per campaign (list health): only events carrying a campaign, a small slice.
Index("ix_consent_event_campaign_id_action", ConsentEvent.campaign_id, ConsentEvent.action,
      postgresql_where=ConsentEvent.campaign_id.is_not(None), sqlite_where=ConsentEvent.campaign_id.is_not(None))


class Tag(Base):
    __tablename__ = "tag"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    supporters: Mapped[list[Supporter]] = relationship(
        secondary=supporter_tag, back_populates="tags", viewonly=True
    )


SUPPRESSION_REASONS = ("bounced", "complained", "erased", "staff")


class Suppression(Base):
    """Addresses never to be mailed again, found by the SHA-256 of the normalised address.

    `email` keeps the address itself for staff to read (bounced, complained, added by staff);
    it is NULL for erased supporters, who stay on the list by hash only. A complaint can never
    be removed; the rest can, by staff with a reason (crm/supporters/suppression.py).
    """

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(40), default="erased")
    detail: Mapped[str] = mapped_column(Text, default="")  # diagnostic, or staff's note
    source: Mapped[str] = mapped_column(String(120), default="")  # bounce:ses, staff:3, upload:3 ...
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="SET NULL"))
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

"""Campaigns, the messages they send, what recipients did with them, and what they are built from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.models.base import Base, Timestamps, utcnow
from crm.models.segments import Segment

# draft -> scheduled -> sending -> sent; paused and back to sending; cancelled; failed.
CAMPAIGN_STATUSES = ("draft", "scheduled", "sending", "paused", "sent", "cancelled", "failed")
EDITABLE_STATUSES = ("draft", "scheduled")

# One email to one supporter. `queued` rows wait for a batch; a batch claims them (`sending`)
# and records the outcome. A row left in `sending` by a dead worker becomes `unknown` and is
# never sent again automatically; `suppressed` rows were skipped because consent changed.
# `held`: the rest of an A/B test's segment, queued once the winner is chosen (campaigns/variants.py).
MESSAGE_STATUSES = ("queued", "sending", "sent", "failed", "suppressed", "bounced", "unknown", "cancelled", "held")

ENGAGEMENT_KINDS = ("open", "click", "unsubscribe", "bounce", "complaint")


class SenderIdentity(Timestamps, Base):
    """A From name and address admins allow campaigns to use."""

    __tablename__ = "sender_identity"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reply_to: Mapped[str] = mapped_column(String(320), default="")
    is_active: Mapped[bool] = mapped_column(default=True)


class EmailTemplate(Timestamps, Base):
    """An MJML starting point in the template library."""

    __tablename__ = "email_template"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    mjml: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))


class Campaign(Timestamps, Base):
    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(400), default="")
    preheader: Mapped[str] = mapped_column(String(400), default="")
    sender_id: Mapped[int | None] = mapped_column(ForeignKey("sender_identity.id"))
    reply_to: Mapped[str] = mapped_column(String(320), default="")
    mjml: Mapped[str] = mapped_column(Text, default="")
    # The plain-text part as staff edited it; empty means "generate it from the HTML".
    text_body: Mapped[str] = mapped_column(Text, default="")
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segment.id"), index=True)
    track_opens: Mapped[bool] = mapped_column(default=False)
    track_clicks: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    # Bumped on every content edit; the compiled template cache and scheduled jobs key on it.
    version: Mapped[int] = mapped_column(default=1)
    scheduled_at: Mapped[datetime | None]  # UTC
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Why the campaign paused or failed, in words for staff (error threshold, missing settings).
    status_reason: Mapped[str] = mapped_column(Text, default="")
    # Final counters, written when the campaign finishes; live progress is counted from message.
    total: Mapped[int] = mapped_column(default=0)
    sent_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    unknown_count: Mapped[int] = mapped_column(default=0)
    suppressed_count: Mapped[int] = mapped_column(default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))

    sender: Mapped[SenderIdentity | None] = relationship()
    segment: Mapped[Segment | None] = relationship()

    @property
    def is_editable(self) -> bool:
        return self.status in EDITABLE_STATUSES


class Message(Base):
    """One email to one supporter; unique per campaign and supporter, the guard against double sends."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("campaign_id", "supporter_id", name="uq_message_campaign_supporter"),
        # Batches claim WHERE campaign_id = :c AND status = 'queued' AND id BETWEEN :lo AND :hi
        # ORDER BY id; progress counts GROUP BY status for one campaign.
        Index("ix_message_campaign_status_id", "campaign_id", "status", "id"),
        # The supporter profile lists a person's messages; unsubscribes cancel their queued ones;
        # segment conditions ask "sent to this supporter since then".
        Index("ix_message_supporter_status_sent", "supporter_id", "status", "sent_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign keys on this table, deliberately: it is the biggest in the database (one row per
    # recipient per campaign) and the snapshot writes a million rows in one statement. PostgreSQL
    # checks a foreign key with a trigger per row; for 200,000 rows the two checks took 3.6 s of
    # 6.1 s (EXPLAIN ANALYZE, bench_send). Rows are only ever created by that INSERT ... SELECT,
    # which reads the campaign and the supporters it points at in the same transaction; campaigns
    # with messages are never deleted and supporters are erased in place, not deleted.
    campaign_id: Mapped[int]
    supporter_id: Mapped[int | None]
    email: Mapped[str | None] = mapped_column(String(320))  # the address used; wiped on erasure
    status: Mapped[str] = mapped_column(String(20), default="queued")
    # The RQ job id of the batch that claimed the row; its Redis heartbeat says whether it lives.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    smtp_message_id: Mapped[str | None] = mapped_column(String(250))
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    # The first human open and click (tracking/flush.py), and whether a machine (an image
    # proxy's prefetch, a link scanner) opened or clicked it too: the message's engagement
    # flags, read from its own row by the engagement export.
    opened_at: Mapped[datetime | None]
    clicked_at: Mapped[datetime | None]
    opened_by_machine: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    clicked_by_machine: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # What the relay or the recipient's server reported afterwards (feedback/apply.py). The
    # status stays `sent` for a bounce reported later, so the campaign's counters stay final;
    # `bounced` is for a message the relay refused at once.
    delivered_at: Mapped[datetime | None]
    bounced_at: Mapped[datetime | None]
    bounce_type: Mapped[str | None] = mapped_column(String(10))  # hard | soft
    complained_at: Mapped[datetime | None]
    # The A/B variant this message carries (campaign_variant.id; no foreign key, as above), and
    # whether it went to the test group (the rest carry the winner).
    variant_id: Mapped[int | None]
    ab_test_group: Mapped[bool | None]

    campaign: Mapped[Campaign] = relationship(primaryjoin="Campaign.id == foreign(Message.campaign_id)")


class EngagementEvent(Base):
    """What a recipient did with a message: open, click, unsubscribe, bounce, complaint."""

    __tablename__ = "engagement_event"
    # is_machine rides along on PostgreSQL, so the per-message flags (exports, report
    # breakdowns) are read from the index alone.
    __table_args__ = (Index("ix_engagement_event_message_kind", "message_id", "kind",
                            postgresql_include=["is_machine"]),
                      # The campaign page's counts: one campaign's opens or clicks.
                      Index("ix_engagement_event_campaign_kind", "campaign_id", "kind"),
                      Index("ix_engagement_event_event_key", "event_key", unique=True))

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"))
    # Denormalised so segment conditions ("opened anything in 90 days") need no join via message.
    supporter_id: Mapped[int | None] = mapped_column(ForeignKey("supporter.id", ondelete="SET NULL"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    url: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An image proxy's prefetch or a link scanner's click (tracking/machine.py): kept, and counted
    # apart from people's.
    is_machine: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    link_index: Mapped[int | None]  # the click's position in the campaign version's links
    # The Redis stream entry a tracked hit came from: the flush's idempotency key (migration 0012).
    event_key: Mapped[str | None] = mapped_column(String(40))


# Engagement segment conditions read "this supporter opened (clicked) since then": one partial
# index per kind (migration 0007); the compiler writes the kind as a literal so both databases
# can use them.
Index("ix_engagement_event_open_supporter_created", EngagementEvent.supporter_id, EngagementEvent.created_at,
      postgresql_where=text("kind = 'open'"), sqlite_where=text("kind = 'open'"))
Index("ix_engagement_event_click_supporter_created", EngagementEvent.supporter_id, EngagementEvent.created_at,
      postgresql_where=text("kind = 'click'"), sqlite_where=text("kind = 'click'"))


class CampaignLink(Base):
    """A link of one campaign version's HTML part, by position: the only places a click redirect goes."""

    __tablename__ = "campaign_link"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(Text)

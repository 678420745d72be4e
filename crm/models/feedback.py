"""What came back after the send: bounces, complaints and unsubscribes reported by relays and the
bounce mailbox, the providers' settings, and the rules that turn soft bounces into a dead address."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, SmallInteger, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, utcnow

FEEDBACK_KINDS = ("bounce", "complaint", "unsubscribe")
# applied: matched to a message we sent and acted on (even if the status was already final);
# unmatched: no message of ours fits (an address we never mailed), logged and ignored.
FEEDBACK_OUTCOMES = ("applied", "unmatched")
PROVIDERS = ("ses", "postmark", "sendgrid", "mailgun", "generic")


class FeedbackEvent(Base):
    """One bounce, complaint or unsubscribe as a relay or the bounce mailbox reported it, once.

    The unique (provider, event_id) is the idempotency key: providers retry, mailboxes are
    fetched again after a crash, and the second arrival of the same fact inserts nothing and so
    changes nothing. No address is kept, only its SHA-256 (soft bounces are counted per address).
    """

    __tablename__ = "feedback_event"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_feedback_event_provider_event_id"),
        # The soft-bounce rule counts an address's soft bounces within the last D days.
        Index("ix_feedback_event_address_hash_created_at", "address_hash", "created_at"),
        # List health and the complaint-rate pause count per campaign and kind.
        Index("ix_feedback_event_campaign_id_kind", "campaign_id", "kind"),
        Index("ix_feedback_event_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))  # ses, postmark, ..., mailbox, smtp
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    hard: Mapped[bool] = mapped_column(default=False)  # a bounce: permanent (5.x.x / "Permanent")
    status: Mapped[str] = mapped_column(String(20), default="")  # enhanced status code, e.g. 5.1.1
    detail: Mapped[str] = mapped_column(Text, default="")  # diagnostic or feedback type, addresses masked
    outcome: Mapped[str] = mapped_column(String(20))
    # Like message, no foreign keys on message or campaign: rows are written in the request that
    # received them, and message is the biggest table in the database.
    message_id: Mapped[int | None]
    campaign_id: Mapped[int | None]
    supporter_id: Mapped[int | None] = mapped_column(ForeignKey("supporter.id", ondelete="SET NULL"))
    address_hash: Mapped[str] = mapped_column(String(64), default="")
    occurred_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeedbackIntake(Base):
    """A reported bounce, complaint or unsubscribe accepted by a webhook and not applied yet.

    The request that received it writes it here (one multi-row INSERT, committed before the
    provider is answered 200) and a worker applies it with apply_feedback(), deleting the row in
    the transaction that applies it (feedback/intake.py). Unique on (provider, event_id) like
    feedback_event, so a provider retrying while the first copy waits adds nothing. The address
    is kept only until the apply, which stores its hash.
    """

    __tablename__ = "feedback_intake"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_feedback_intake_provider_event_id"),
        # The claim's order: complaints, then hard bounces, then the rest, oldest first in each;
        # only rows still waiting (feedback/intake.py: _claim).
        Index("ix_feedback_intake_waiting", "priority", "id", postgresql_where=text("failed_at IS NULL"),
              sqlite_where=text("failed_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(320))
    message_ref: Mapped[str | None] = mapped_column(String(200))
    message_id: Mapped[str | None] = mapped_column(String(1000))  # our Message-ID as reported back
    hard: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(20), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime | None]
    ref_needs_address: Mapped[bool] = mapped_column(default=False)
    # 0 a complaint, 1 a hard bounce, 2 anything else: applied in that order (PRIORITY in feedback/intake.py).
    priority: Mapped[int] = mapped_column(SmallInteger, default=2, server_default="2")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when applying this row alone failed: it is kept for a person to look at, and skipped.
    failed_at: Mapped[datetime | None]
    error: Mapped[str] = mapped_column(String(200), default="")


class FeedbackProvider(Base):
    """An admin's settings for one relay's webhook: on or off, options, and its secret (encrypted)."""

    __tablename__ = "feedback_provider"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Fernet token (key derived from SECRET_KEY): a database dump does not reveal it.
    secret: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))


class FeedbackRules(Base):
    """The one row of admin-configurable rules: N soft bounces within D days make an address bouncing."""

    __tablename__ = "feedback_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    soft_bounce_limit: Mapped[int] = mapped_column(default=3)
    soft_bounce_days: Mapped[int] = mapped_column(default=30)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))

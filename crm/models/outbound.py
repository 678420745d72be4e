"""Outbound webhooks: the receivers admins registered, and every delivery made to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, Timestamps, utcnow

WEBHOOK_EVENTS = ("signature.created", "supporter.subscribed", "supporter.unsubscribed",
                  "supporter.bounced", "supporter.complained", "campaign.sent")
# pending: queued, not tried yet; retrying: failed, another attempt is scheduled;
# delivered: the receiver answered 2xx; failed: every attempt failed.
DELIVERY_STATUSES = ("pending", "retrying", "delivered", "failed")
_UNTRIED = text("status = 'pending' AND attempts = 0")


class WebhookEndpoint(Timestamps, Base):
    """A URL that receives the events it subscribed to, signed with its own secret."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Fernet token (key derived from SECRET_KEY), as the relays' secrets are stored.
    secret: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(default=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))


class OutboundEvent(Base):
    """A committed fact waiting for the dispatch job (the outbox): written in the fact's own transaction.

    The dispatch job turns each row into deliveries and deletes it in one transaction, so an
    event is never lost between the fact's commit and its deliveries, and never made twice."""

    __tablename__ = "outbound_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event sent (or to be sent) to one endpoint: the exact body signed, and how it went."""

    __tablename__ = "webhook_delivery"
    # The endpoint's delivery log, newest first; and the deliveries not yet tried, which the
    # dispatch job queues again if the job that made them died before queueing them.
    __table_args__ = (Index("ix_webhook_delivery_endpoint_id_id", "endpoint_id", "id"),
                      Index("ix_webhook_delivery_untried", "id", postgresql_where=_UNTRIED, sqlite_where=_UNTRIED))

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(String(64))  # the webhook-id header; a replay keeps it
    event_type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)  # the JSON exactly as signed and sent
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    response_status: Mapped[int | None]
    error: Mapped[str] = mapped_column(Text, default="")
    replay_of_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]


class WebhookSettings(Base):
    """The one row of outbound webhook settings: whether private and loopback hosts are allowed."""

    __tablename__ = "webhook_settings"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    allow_private_hosts: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))

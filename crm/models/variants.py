"""A/B tests: a campaign's variants of subject, sender name or body, and how the winner is chosen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, utcnow

AB_METRICS = ("opens", "clicks")  # unique human opens or clicks per message sent
# draft: being set up; testing: the test group is out and the rest held; decided: the winner
# goes to the rest.
AB_STATUSES = ("draft", "testing", "decided")


class CampaignVariant(Base):
    """One variant; position 0 is the default (the campaign's own content), sent when no difference is significant."""

    __tablename__ = "campaign_variant"
    __table_args__ = (UniqueConstraint("campaign_id", "position", name="uq_campaign_variant_campaign_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    position: Mapped[int]
    label: Mapped[str] = mapped_column(String(20))  # A, B, C, D
    subject: Mapped[str] = mapped_column(String(400), default="")  # empty: the campaign's
    from_name: Mapped[str] = mapped_column(String(200), default="")  # empty: the sender identity's
    mjml: Mapped[str] = mapped_column(Text, default="")  # empty: the campaign's body
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AbTest(Base):
    """A campaign's test: the share of the segment tested, the wait, the metric, and the outcome."""

    __tablename__ = "ab_test"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    test_fraction: Mapped[float] = mapped_column(default=0.2)
    wait_minutes: Mapped[int] = mapped_column(default=240)
    metric: Mapped[str] = mapped_column(String(10), default="opens")
    status: Mapped[str] = mapped_column(String(20), default="draft")
    tested_at: Mapped[datetime | None]  # when the test group was snapshotted
    decided_at: Mapped[datetime | None]
    winner_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_variant.id", ondelete="SET NULL"))
    decided_by: Mapped[str] = mapped_column(String(40), default="")  # scheduler | staff:<id>
    decision: Mapped[str] = mapped_column(Text, default="")  # why, in words for staff

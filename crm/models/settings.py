"""The organisation's own settings, editable by admins: one row, over the environment's defaults."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, utcnow


class OrgSettings(Base):
    """At most one row (id 1). A NULL column means "not set here": the environment variable
    (ORG_NAME, ORG_POSTAL_ADDRESS, MAIL_FROM, ORG_COUNTRY) applies, so they are the first-run
    defaults and a deployment that never opens Settings keeps working from its environment."""

    __tablename__ = "org_settings"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    name: Mapped[str | None] = mapped_column(String(200))
    postal_address: Mapped[str | None] = mapped_column(Text)
    mail_from: Mapped[str | None] = mapped_column(String(320))
    country: Mapped[str | None] = mapped_column(String(2))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))

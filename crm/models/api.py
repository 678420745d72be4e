"""API keys: what the OSDI API (api/) authenticates its callers with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, utcnow
from crm.models.supporters import Supporter

API_SCOPES = ("read", "read_write")


class ApiKey(Base):
    """One key an admin made: its label, scope and the SHA-256 of its token (the token is shown once).

    A key is a random 256-bit token, so an unsalted SHA-256 is enough to store it: there is no
    dictionary to try, and the lookup stays one indexed equality per request.
    """

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(100), unique=True)
    scope: Mapped[str] = mapped_column(String(20), default="read")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))  # shown in the list, to tell keys apart
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def can_write(self) -> bool:
        return self.scope == "read_write"


# GET /api/v1/people pages in (modified_date, id) order, usually with `modified_date gt ...`
# (a sync asking what changed): with this index each page is a range seek from the previous
# page's last row instead of a sort of every match (revisions 0030, 0032; plans in api/queries.py).
# It carries erased_at too (INCLUDE on PostgreSQL, a third key column on SQLite), so the
# API's count and its OFFSET to a page asked cold read the index alone (index-only scans),
# never the rows. Not partial on erased_at IS NULL: such an index covers the predicate every
# supporter query carries, and PostgreSQL then preferred it to the search's trigram index.
Index("ix_supporter_updated_at_id_erased_at", Supporter.__table__.c.updated_at, Supporter.__table__.c.id,
      postgresql_include=["erased_at"])

"""Staff accounts and the audit log."""

from __future__ import annotations

import secrets
from datetime import datetime
from functools import cache
from typing import Any

from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from crm.models.base import Base, Timestamps, utcnow

ROLES = ("admin", "organizer", "analyst")


class StaffUser(UserMixin, Timestamps, Base):
    __tablename__ = "staff_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored normalised
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(default=True)
    last_login_at: Mapped[datetime | None]

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive accounts
        return self.active

    def set_password(self, password: str) -> None:
        """Hash with scrypt (werkzeug's default parameters)."""
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


@cache
def _stand_in_hash() -> str:
    """A hash of a random password, made like every account's, for sign-ins that name no account."""
    return generate_password_hash(secrets.token_urlsafe(32), method="scrypt")


def password_matches(user: StaffUser | None, password: str) -> bool:
    """Whether `password` is `user`'s, at the same cost whether or not the account exists.

    Answering at once for an unknown address (and hashing only for a known one) would tell
    anyone timing the sign-in form which addresses have staff accounts; so an unknown
    address is checked against a stand-in hash made with the same scrypt parameters.
    """
    if user is None:
        check_password_hash(_stand_in_hash(), password)
        return False
    return user.check_password(password)


class AuditLog(Base):
    """Who did what sensitive thing (exports, sends, staff changes), and when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_user_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"), index=True)
    action: Mapped[str] = mapped_column(String(80), index=True)
    target: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

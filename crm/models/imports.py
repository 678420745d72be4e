"""Supporter imports: one row per uploaded file, with the counts that account for every row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.models.base import Base, utcnow

IMPORT_STATUSES = ("uploaded", "queued", "running", "done", "failed")


class ImportJob(Base):
    __tablename__ = "import_job"

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(300))
    stored_path: Mapped[str] = mapped_column(String(500))  # uploaded file under instance/imports
    status: Mapped[str] = mapped_column(String(20), default="uploaded", index=True)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # column -> field
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # petition, tags, consent
    total_rows: Mapped[int] = mapped_column(default=0)
    processed_rows: Mapped[int] = mapped_column(default=0)
    created_count: Mapped[int] = mapped_column(default=0)
    updated_count: Mapped[int] = mapped_column(default=0)
    unchanged_count: Mapped[int] = mapped_column(default=0)
    rejected_count: Mapped[int] = mapped_column(default=0)
    # Kept rows whose consent value meant neither yes nor no (not recorded as consent), and
    # those values with their row counts, for the import's page.
    consent_unrecognised_count: Mapped[int] = mapped_column(default=0, server_default="0")
    consent_unrecognised_values: Mapped[dict[str, int]] = mapped_column(JSON, default=dict, server_default="{}")
    rejected_path: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

"""The organisation's wall clock: staff enter and read times in ORG_TIMEZONE; the database keeps UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import current_app


def org_zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["ORG_TIMEZONE"])


def to_utc(local: datetime) -> datetime:
    """A wall-clock time in the organisation's zone -> UTC."""
    if local.tzinfo is None:
        local = local.replace(tzinfo=org_zone())
    return local.astimezone(UTC)


def to_local(value: datetime | None) -> datetime | None:
    """A stored timestamp (naive values are UTC) in the organisation's zone."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(org_zone())


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """For pages: the time in the organisation's zone with the zone's abbreviation, e.g. "2026-04-01 10:30 BST"."""
    local = to_local(value)
    return f"{local.strftime(fmt)} {local.tzname()}" if local else ""

"""Supporter queries shared by the list page, exports and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, or_

from crm.extensions import db
from crm.models import ConsentEvent, EMAIL_STATUSES, Petition, Signature, Supporter

PAGE_SIZE = 50


@dataclass(frozen=True)
class SupporterFilter:
    q: str = ""
    email_status: str = ""

    @classmethod
    def from_args(cls, args) -> SupporterFilter:
        status = args.get("email_status", "")
        return cls(q=args.get("q", "").strip()[:200], email_status=status if status in EMAIL_STATUSES else "")


def filtered_query(flt: SupporterFilter) -> Select:
    """Supporters matching the filter (erased records excluded)."""
    query = db.select(Supporter).where(Supporter.erased_at.is_(None))
    if flt.q:
        like = f"%{flt.q.lower()}%"
        query = query.where(or_(
            Supporter.email.like(like),
            db.func.lower(Supporter.first_name).like(like),
            db.func.lower(Supporter.last_name).like(like),
        ))
    if flt.email_status:
        query = query.where(Supporter.email_status == flt.email_status)
    return query


def page_of_supporters(flt: SupporterFilter, after_id: int | None) -> tuple[list[Supporter], int | None]:
    """Keyset pagination on id (newest first): stays fast however deep the page."""
    query = filtered_query(flt).order_by(Supporter.id.desc()).limit(PAGE_SIZE + 1)
    if after_id:
        query = query.where(Supporter.id < after_id)
    rows = list(db.session.scalars(query))
    next_after = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    return rows[:PAGE_SIZE], next_after


def consent_timeline(supporter: Supporter) -> list[ConsentEvent]:
    return list(db.session.scalars(supporter.consent_events.select().order_by(ConsentEvent.id.desc())))


def petitions_signed(supporter: Supporter) -> list[tuple[Signature, Petition]]:
    return db.session.execute(
        db.select(Signature, Petition).join(Petition, Signature.petition_id == Petition.id)
        .where(Signature.supporter_id == supporter.id).order_by(Signature.created_at.desc())
    ).all()

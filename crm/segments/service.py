"""Segment rules shared by the views, the CLI and (later) the campaign snapshot."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, update
from sqlalchemy.exc import IntegrityError

from crm import audit
from crm.extensions import db
from crm.models import Campaign, Petition, Segment, Supporter, Tag, supporter_tag
from crm.segments import compiler
from crm.segments.rules import EMPTY_TREE, RuleError, ValidatedRules, referenced_segment_ids, validate
from crm.segments.summary import summarise

EXPORT_BATCH = 2000
EXPORT_HEADER = ["id", "email", "first_name", "last_name", "postal_code", "country",
                 "email_status", "created_at", "tags"]


class SegmentInvalid(ValueError):
    """Refused save: field name -> message, for the form."""

    def __init__(self, errors: dict[str, str], path: str = ""):
        self.errors = errors
        self.path = path
        super().__init__("; ".join(errors.values()))


def parse_rules(raw: str | Any) -> Any:
    """Parse the rules textarea (JSON text); RuleError when it is not JSON."""
    if not isinstance(raw, str):
        return raw
    if not raw.strip():
        return dict(EMPTY_TREE)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RuleError("", f"the rules are not valid JSON ({exc.msg})") from None


@dataclass
class Preview:
    count: int
    sample: list[dict[str, Any]]
    summary: str

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "sample": self.sample, "summary": self.summary}


def preview(rules: Any, segment_id: int | None = None, n: int = 20) -> Preview:
    """Validate once, then count, sample and describe (raises RuleError)."""
    validated = validate(rules, segment_id=segment_id)
    return Preview(compiler.count(validated), compiler.sample(validated, n), summarise(validated))


@dataclass
class SegmentRow:
    segment: Segment
    summary: str
    count: int | None
    error: str = ""


def list_segments() -> list[SegmentRow]:
    """Every segment with its sentence and live count; a segment whose rules went stale (a
    petition deleted since) shows the reason instead of failing the page."""
    rows = []
    for segment in db.session.scalars(db.select(Segment).order_by(Segment.name)):
        try:
            validated = validate(segment.rules, segment_id=segment.id)
        except RuleError as exc:
            rows.append(SegmentRow(segment, "", None, str(exc)))
            continue
        rows.append(SegmentRow(segment, summarise(validated), compiler.count(validated)))
    return rows


def describe(segment: Segment) -> tuple[ValidatedRules | None, str]:
    """The validated rules of a saved segment, or None and the reason they no longer hold."""
    try:
        return validate(segment.rules, segment_id=segment.id), ""
    except RuleError as exc:
        return None, str(exc)


def problems(data: dict[str, Any], segment: Segment | None) -> dict[str, str]:
    """Every rule the name and rules break, as save_segment judges them (nothing is written)."""
    try:
        _checked(data, segment)
    except SegmentInvalid as exc:
        return exc.errors
    return {}


def _checked(data: dict[str, Any], segment: Segment | None) -> tuple[str, Any]:
    """(the name, the validated tree), or SegmentInvalid with every problem."""
    name = (data.get("name") or "").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "Give the segment a name."
    elif len(name) > 200:
        errors["name"] = "Keep the name under 200 characters."
    else:
        clash = db.session.scalar(db.select(Segment.id).where(Segment.name == name))
        if clash is not None and (segment is None or clash != segment.id):
            errors["name"] = "Another segment already has this name."
    path = ""
    try:
        tree = validate(parse_rules(data.get("rules")), segment_id=segment.id if segment else None).tree
    except RuleError as exc:
        errors["rules"] = str(exc)
        path = exc.path
    if errors:
        raise SegmentInvalid(errors, path)
    return name, tree


def save_segment(data: dict[str, Any], segment: Segment | None, actor_id: int | None) -> Segment:
    """Create or update a segment; nothing is written unless name and rules are valid."""
    name, tree = _checked(data, segment)
    if segment is None:
        segment = Segment(created_by_id=actor_id)
        db.session.add(segment)
    segment.name = name
    segment.description = (data.get("description") or "").strip()
    segment.rules = tree
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent save took the name
        db.session.rollback()
        raise SegmentInvalid({"name": "Another segment already has this name."}) from None
    return segment


def duplicate_segment(segment: Segment, actor_id: int | None) -> Segment:
    """Copy a segment under the first free name "Copy of X", "Copy of X (2)", ..."""
    base = f"Copy of {segment.name}"[:190]
    taken = set(db.session.scalars(db.select(Segment.name).where(Segment.name.startswith(base))))
    name, n = base, 2
    while name in taken:
        name, n = f"{base} ({n})", n + 1
    copy = Segment(name=name, description=segment.description, rules=segment.rules,
                   created_by_id=actor_id)
    db.session.add(copy)
    db.session.commit()
    return copy


# A campaign in one of these states will still read its segment (the snapshot has not run, or
# resuming it re-checks the segment), so the segment must stay.
ACTIVE_CAMPAIGN_STATUSES = ("scheduled", "sending", "paused")


def segment_in_use(segment: Segment) -> bool:
    """Whether a scheduled, sending or paused campaign targets this segment."""
    # One EXISTS over campaign, served by ix_campaign_segment_id.
    return bool(db.session.scalar(db.select(exists().where(
        Campaign.segment_id == segment.id, Campaign.status.in_(ACTIVE_CAMPAIGN_STATUSES)))))


IN_USE = "A scheduled, sending or paused campaign uses this segment."


def segments_mentioning(ids_in: Callable[[Any], set[int]], ident: int) -> list[str]:
    """Names of saved segments whose rules mention `ident`, as found by a rules.referenced_* function."""
    return sorted(name for name, rules in db.session.execute(db.select(Segment.name, Segment.rules))
                  if ident in ids_in(rules))


def quoted(names: list[str]) -> str:
    return ", ".join(f"“{n}”" for n in names)


def delete_segment(segment: Segment) -> int:
    """Delete a segment unless an active campaign uses it or another segment refers to it.

    Other campaigns that named it (drafts, and finished ones for the record) lose their segment:
    a draft then asks for one again before it can be sent. Returns how many drafts that was.
    """
    if segment_in_use(segment):
        raise SegmentInvalid({"segment": IN_USE})
    users = segments_mentioning(referenced_segment_ids, segment.id)
    if users:
        raise SegmentInvalid({"segment": "Other segments refer to this one: " + quoted(users)})
    drafts = db.session.scalar(db.select(func.count()).select_from(Campaign).where(
        Campaign.segment_id == segment.id, Campaign.status == "draft")) or 0
    # The status test repeats inside the UPDATE: a campaign scheduled since the check above keeps
    # its segment, so the DELETE then fails on the foreign key and nothing changes.
    db.session.execute(update(Campaign).where(
        Campaign.segment_id == segment.id, Campaign.status.not_in(ACTIVE_CAMPAIGN_STATUSES))
        .values(segment_id=None).execution_options(synchronize_session=False))
    db.session.delete(segment)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise SegmentInvalid({"segment": IN_USE}) from None
    return drafts


def export_rows(validated: ValidatedRules) -> Iterator[list]:
    """Rows for EXPORT_HEADER in id order, in batches with tags fetched once per batch."""
    query = (db.select(Supporter.id, Supporter.email, Supporter.first_name, Supporter.last_name,
                       Supporter.postal_code, Supporter.country, Supporter.email_status,
                       Supporter.created_at)
             .where(compiler.segment_condition(validated)).order_by(Supporter.id)
             .execution_options(yield_per=EXPORT_BATCH))
    for batch in db.session.execute(query).partitions():
        ids = [row[0] for row in batch]
        tags: dict[int, list[str]] = {}
        for supporter_id, name in db.session.execute(
            db.select(supporter_tag.c.supporter_id, Tag.name).join(Tag, Tag.id == supporter_tag.c.tag_id)
            .where(supporter_tag.c.supporter_id.in_(ids)).order_by(Tag.name)
        ):
            tags.setdefault(supporter_id, []).append(name)
        for row in batch:
            yield [*row, ";".join(tags.get(row[0], ()))]


def record_export(segment: Segment, fmt: str, rows: int) -> None:
    audit.record("segments.export", f"segment:{segment.id}", name=segment.name, format=fmt, rows=rows)
    db.session.commit()


def builder_data(exclude_segment_id: int | None = None) -> dict[str, Any]:
    """What the builder's selects offer: petitions, tags, campaigns and other segments (id + label).

    Campaigns are those past draft (a draft has sent nothing), newest first.
    """
    petitions = db.session.execute(db.select(Petition.id, Petition.title).order_by(Petition.title)).all()
    tags = db.session.execute(db.select(Tag.id, Tag.name).order_by(Tag.name)).all()
    segments = db.session.execute(db.select(Segment.id, Segment.name).order_by(Segment.name)).all()
    campaigns = db.session.execute(db.select(Campaign.id, Campaign.name).where(Campaign.status != "draft")
                                   .order_by(Campaign.created_at.desc(), Campaign.id.desc())).all()
    return {
        "petitions": [{"id": i, "label": t} for i, t in petitions],
        "tags": [{"id": i, "label": t} for i, t in tags],
        "campaigns": [{"id": i, "label": t} for i, t in campaigns],
        "segments": [{"id": i, "label": t} for i, t in segments if i != exclude_segment_id],
    }

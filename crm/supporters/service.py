"""Supporter queries and rules shared by the list page, the profile, exports, bulk actions and the CLI."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, delete, exists, false, func, insert, literal, literal_column, tuple_
from sqlalchemy.exc import IntegrityError

from crm import audit
from crm.countries import is_country_code
from crm.database import plan_for_these_values
from crm.emails import InvalidEmail, normalise_email
from crm.extensions import db
from crm.input_guard import positive_int
from crm.models import (
    EMAIL_STATUSES,
    Campaign,
    ConsentEvent,
    Message,
    Petition,
    Segment,
    Signature,
    Supporter,
    Tag,
    supporter_tag,
    utcnow,
)
from crm.segments.compiler import segment_condition
from crm.segments.rules import RuleError, validate
from crm.supporters.consent import record_consent
from crm.supporters.fields import PROFILE_LIMITS, too_long
from crm.supporters.suppression import REMOVABLE, entry_for, suppress

PAGE_SIZE = 50
EXPORT_BATCH = 2000
MESSAGES_SHOWN = 50  # on the profile, newest first


class SupporterError(ValueError):
    """A rule refused the change; the message is meant for staff."""


def _date_arg(raw) -> date | None:
    try:
        return date.fromisoformat(str(raw).strip()) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class SupporterFilter:
    """What the list, exports and bulk actions select; built from query args, invalid parts dropped."""

    q: str = ""
    email_status: str = ""
    petition: int | None = None
    tag: int | None = None
    country: str = ""
    date_from: date | None = None
    date_to: date | None = None
    segment: int | None = None

    @classmethod
    def from_args(cls, args: Mapping) -> SupporterFilter:
        status = args.get("email_status", "") or ""
        country = (args.get("country", "") or "").strip().upper()
        return cls(
            q=(args.get("q", "") or "").strip()[:200],
            email_status=status if status in EMAIL_STATUSES else "",
            petition=positive_int(args.get("petition")),
            tag=positive_int(args.get("tag")),
            country=country if len(country) == 2 and country.isalpha() else "",
            date_from=_date_arg(args.get("date_from")),
            date_to=_date_arg(args.get("date_to")),
            segment=positive_int(args.get("segment")),
        )

    def as_args(self) -> dict[str, str]:
        """The filter as query-string arguments (empty parts left out), for links and exports."""
        return {k: v.isoformat() if isinstance(v, date) else str(v)
                for k, v in asdict(self).items() if v not in ("", None)}

    def is_empty(self) -> bool:
        return not self.as_args()


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def search_text():
    """What the name-or-email search matches: address, first and last name, in lower case.

    One expression so that "amina patel" finds Amina Patel, and the same one, to the letter,
    that PostgreSQL's trigram index ix_supporter_search_trgm is built on (revision 0008): the
    constants are written into the SQL, not bound, or the index would not match.
    """
    space, empty = literal_column("' '"), literal_column("''")
    return func.lower(func.coalesce(Supporter.email, empty).op("||")(space).op("||")(Supporter.first_name)
                      .op("||")(space).op("||")(Supporter.last_name))


def _like_escaped(term: str) -> str:
    """The term with LIKE's wildcards taken literally (escape character: backslash)."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filtered_query(flt: SupporterFilter) -> Select:
    """Supporters matching the filter (erased records excluded), as ONE select.

    Petition, tag and date conditions are EXISTS subqueries rather than joins so a supporter
    appears once however many signatures or tags match, and the same select can feed
    COUNT, INSERT ... SELECT, DELETE ... IN and streaming exports. The signature subquery is
    served by ix_signature_supporter_petition (supporter_id, petition_id); the tag one by the
    supporter_tag primary key (supporter_id, tag_id).
    """
    query = db.select(Supporter).where(Supporter.erased_at.is_(None))
    if flt.segment:
        # The segment's compiled predicate (EXISTS subqueries on this same supporter row), so
        # the list, counts, bulk tags and exports stay ONE statement. A segment that is gone
        # or whose rules no longer hold matches no one (segment_problem says why): dropping
        # the condition instead would quietly widen an export to everybody.
        rules = _segment_rules(flt.segment)
        query = query.where(segment_condition(rules) if rules is not None else false())
    if flt.q:
        query = query.where(search_text().like(f"%{_like_escaped(flt.q.lower())}%", escape="\\"))
    if flt.email_status:
        query = query.where(Supporter.email_status == flt.email_status)
    if flt.country:
        query = query.where(Supporter.country == flt.country)
    if flt.tag:
        query = query.where(exists().where(
            supporter_tag.c.supporter_id == Supporter.id, supporter_tag.c.tag_id == flt.tag,
        ))
    if flt.petition or flt.date_from or flt.date_to:
        # With a petition the dates apply to that petition's signature; without, to any signature.
        conditions = [Signature.supporter_id == Supporter.id]
        if flt.petition:
            conditions.append(Signature.petition_id == flt.petition)
        if flt.date_from:
            conditions.append(Signature.created_at >= _utc_midnight(flt.date_from))
        if flt.date_to:  # inclusive: up to the end of that day
            conditions.append(Signature.created_at < _utc_midnight(flt.date_to + timedelta(days=1)))
        query = query.where(exists().where(*conditions))
    return query


def _segment_rules(segment_id: int):
    """The validated rules of a saved segment, or None when it is missing or no longer valid."""
    segment = db.session.get(Segment, segment_id)
    if segment is None:
        return None
    try:
        return validate(segment.rules, segment_id=segment.id)
    except RuleError:
        return None


def segment_problem(flt: SupporterFilter) -> str:
    """Why the filter's segment cannot be applied (it then matches no one), or ''."""
    if not flt.segment:
        return ""
    segment = db.session.get(Segment, flt.segment)
    if segment is None:
        return "That segment no longer exists."
    try:
        validate(segment.rules, segment_id=segment.id)
    except RuleError as exc:
        return f"The segment “{segment.name}” needs fixing before it can filter the list: {exc}"
    return ""


def segment_choices() -> list[tuple[int, str]]:
    """Saved segments for the list's filter, by name."""
    return [tuple(row) for row in db.session.execute(db.select(Segment.id, Segment.name).order_by(Segment.name))]


def count_supporters(flt: SupporterFilter) -> int:
    """How many supporters match (one COUNT query)."""
    plan_for_these_values()
    ids = filtered_query(flt).with_only_columns(Supporter.id).subquery()
    return db.session.scalar(db.select(func.count()).select_from(ids)) or 0


# --- sorting and keyset pagination -----------------------------------------------------------

# sort name -> (column or None for id-only, descending?). Each is paged by the tuple (column, id),
# which is unique, so ties (same last name) never skip or repeat a row. id order is creation order.
SORTS: dict[str, tuple[str | None, bool]] = {
    "newest": (None, True),
    "oldest": (None, False),
    "email": ("email", False),
    "email_desc": ("email", True),
    "last_name": ("last_name", False),
    "last_name_desc": ("last_name", True),
}
SORT_LABELS = {
    "newest": "Newest first", "oldest": "Oldest first", "email": "Email A–Z",
    "email_desc": "Email Z–A", "last_name": "Last name A–Z", "last_name_desc": "Last name Z–A",
}
DEFAULT_SORT = "newest"


class BadCursor(ValueError):
    """The `after` argument is not a cursor this sort produced."""


def parse_cursor(sort: str, raw: str | None) -> tuple[str | None, int] | None:
    """`after` is `<id>` for id sorts and `<value>|<id>` for column sorts (value may contain |)."""
    if not raw:
        return None
    column, _ = SORTS[sort]
    if column is None:
        key = positive_int(raw)
        if key is None:
            raise BadCursor(raw)
        return None, key
    value, sep, id_part = raw.rpartition("|")
    key = positive_int(id_part)
    if not sep or key is None or len(value) > 320:
        raise BadCursor(raw)
    return value, key


def make_cursor(sort: str, supporter: Supporter) -> str:
    column, _ = SORTS[sort]
    if column is None:
        return str(supporter.id)
    return f"{getattr(supporter, column) or ''}|{supporter.id}"


def page_of_supporters(flt: SupporterFilter, sort: str = DEFAULT_SORT, after: str | None = None
                       ) -> tuple[list[Supporter], str | None]:
    """One page in `sort` order after the cursor, and the cursor of the next page (or None).

    Keyset, not OFFSET: WHERE (last_name, id) > (:v, :id) ORDER BY last_name, id LIMIT 51 walks
    ix_supporter_last_name_id from the cursor, so page 20,000 of a million rows costs the same as
    page 1. Email is unique, so its own unique index serves the email sort. Raises BadCursor.
    """
    if sort not in SORTS:
        sort = DEFAULT_SORT
    column_name, descending = SORTS[sort]
    cursor = parse_cursor(sort, after)
    plan_for_these_values()
    query = filtered_query(flt)
    if column_name is None:
        order = [Supporter.id.desc() if descending else Supporter.id.asc()]
        if cursor:
            query = query.where(Supporter.id < cursor[1] if descending else Supporter.id > cursor[1])
    else:
        column = getattr(Supporter, column_name)
        order = ([column.desc(), Supporter.id.desc()] if descending
                 else [column.asc(), Supporter.id.asc()])
        if cursor:
            pair, bound = tuple_(column, Supporter.id), tuple_(literal(cursor[0]), literal(cursor[1]))
            query = query.where(pair < bound if descending else pair > bound)
    rows = list(db.session.scalars(query.order_by(*order).limit(PAGE_SIZE + 1)))
    next_after = make_cursor(sort, rows[PAGE_SIZE - 1]) if len(rows) > PAGE_SIZE else None
    return rows[:PAGE_SIZE], next_after


# --- tags ------------------------------------------------------------------------------------

def tag_choices() -> list[Tag]:
    return list(db.session.scalars(db.select(Tag).order_by(Tag.name)))


def petition_choices() -> list[Petition]:
    return list(db.session.scalars(db.select(Petition).order_by(Petition.created_at.desc())))


def get_or_create_tag(name: str) -> Tag:
    """The tag with this name, created if missing (safe against a concurrent creator)."""
    name = " ".join((name or "").split())[:100]
    if not name:
        raise SupporterError("Enter a tag name.")
    tag = db.session.scalar(db.select(Tag).where(Tag.name == name))
    if tag is None:
        try:
            with db.session.begin_nested():
                tag = Tag(name=name)
                db.session.add(tag)
        except IntegrityError:  # someone created it between our SELECT and INSERT
            tag = db.session.scalar(db.select(Tag).where(Tag.name == name))
    return tag


def bulk_tag(flt: SupporterFilter, tag_name: str, action: str) -> tuple[Tag, int]:
    """Add or remove a tag on every supporter matching the filter; commit; return rows changed.

    One INSERT ... SELECT (skipping supporters who already have the tag) or one
    DELETE ... WHERE supporter_id IN (filtered ids): no Python loop over people.
    """
    if action not in ("add", "remove"):
        raise SupporterError("Choose add or remove.")
    ids = filtered_query(flt).with_only_columns(Supporter.id)
    if action == "add":
        tag = get_or_create_tag(tag_name)
        statement = insert(supporter_tag).from_select(
            ["supporter_id", "tag_id"],
            ids.add_columns(literal(tag.id)).where(~exists().where(
                supporter_tag.c.supporter_id == Supporter.id, supporter_tag.c.tag_id == tag.id,
            )),
        )
    else:
        name = " ".join((tag_name or "").split())
        tag = db.session.scalar(db.select(Tag).where(Tag.name == name))
        if tag is None:
            raise SupporterError(f"There is no tag called {name!r}." if name else "Enter a tag name.")
        statement = delete(supporter_tag).where(
            supporter_tag.c.tag_id == tag.id, supporter_tag.c.supporter_id.in_(ids.scalar_subquery()),
        )
    # Changed rows = difference of the tag's row counts (an index-only count on
    # ix_supporter_tag_tag_id): psycopg reports rowcount -1 for SQLAlchemy's INSERT ... SELECT.
    tagged = db.select(func.count()).select_from(supporter_tag).where(supporter_tag.c.tag_id == tag.id)
    before = db.session.scalar(tagged)
    db.session.execute(statement)
    changed = abs(db.session.scalar(tagged) - before)
    audit.record("supporters.bulk_tag", f"tag:{tag.id}", tag=tag.name, change=action,
                 filter=flt.as_args(), changed=changed)
    db.session.commit()
    return tag, changed


def add_tag(supporter: Supporter, tag_name: str) -> Tag:
    tag = attach_tag(supporter, tag_name)
    db.session.commit()
    return tag


def attach_tag(supporter: Supporter, tag_name: str) -> Tag:
    """Tag the supporter (the tag made if new) in the caller's transaction."""
    tag = get_or_create_tag(tag_name)
    if tag not in supporter.tags:
        supporter.tags.append(tag)
    return tag


def remove_tag(supporter: Supporter, tag_id: int) -> None:
    db.session.execute(delete(supporter_tag).where(
        supporter_tag.c.supporter_id == supporter.id, supporter_tag.c.tag_id == tag_id))
    db.session.commit()
    db.session.expire(supporter, ["tags"])


# --- profile ---------------------------------------------------------------------------------

def get_supporter(supporter_id: int) -> Supporter | None:
    """The supporter, or None if missing or erased."""
    supporter = db.session.get(Supporter, supporter_id)
    return None if supporter is None or supporter.erased_at is not None else supporter


def consent_timeline(supporter: Supporter) -> list[ConsentEvent]:
    # order_by(None) first: the relationship's own order (oldest first) would otherwise come before ours.
    return list(db.session.scalars(supporter.consent_events.select().order_by(None).order_by(ConsentEvent.id.desc())))


def campaign_names(events: list[ConsentEvent]) -> dict[int, str]:
    """The names of the campaigns these events came from (an unsubscribe link, a one-click header)."""
    ids = {e.campaign_id for e in events if e.campaign_id is not None}
    if not ids:
        return {}
    return dict(db.session.execute(db.select(Campaign.id, Campaign.name).where(Campaign.id.in_(ids))).all())


def petitions_signed(supporter: Supporter) -> list[tuple[Signature, Petition]]:
    return db.session.execute(
        db.select(Signature, Petition).join(Petition, Signature.petition_id == Petition.id)
        .where(Signature.supporter_id == supporter.id).order_by(Signature.created_at.desc())
    ).all()


def messages_received(supporter: Supporter, limit: int | None = MESSAGES_SHOWN) -> list[tuple[Message, str]]:
    """The supporter's latest messages (newest first, at most `limit`; None for all) with campaign names.

    Ordered by created_at (set when the recipient snapshot queued the row, so every message has
    one) and id; ix_message_supporter_status_sent narrows to this supporter first.
    """
    query = (db.select(Message, Campaign.name).join(Campaign, Campaign.id == Message.campaign_id)
             .where(Message.supporter_id == supporter.id)
             .order_by(Message.created_at.desc(), Message.id.desc()))
    if limit is not None:
        query = query.limit(limit)
    return [tuple(row) for row in db.session.execute(query)]


class ProfileInvalid(SupporterError):
    """Refused profile edit: field name -> messages, every problem at once."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(" ".join(m for ms in errors.values() for m in ms))


def profile_problems(supporter: Supporter, *, email: str, first_name: str = "", last_name: str = "",
                     postal_code: str = "", country: str = "") -> dict[str, list[str]]:
    """Every rule the profile fields break (nothing is written): a bad or taken address, an
    unknown country, a name or postal code too long -- refused, never cut short."""
    errors: dict[str, list[str]] = {}
    try:
        address = normalise_email(email or "")
    except InvalidEmail as exc:
        errors["email"] = [str(exc)]
    else:
        if address != supporter.email and db.session.scalar(db.select(Supporter.id).where(
                Supporter.email == address, Supporter.id != supporter.id)):
            errors["email"] = ["Another supporter already has this email address."]
    country = (country or "").strip().upper()
    if country and not is_country_code(country):
        errors["country"] = ["Choose a country from the list."]
    for name, value in (("first_name", first_name), ("last_name", last_name), ("postal_code", postal_code)):
        if len((value or "").strip()) > PROFILE_LIMITS[name]:
            errors[name] = [too_long(name, PROFILE_LIMITS[name]).capitalize() + "."]
    return errors


def update_supporter(supporter: Supporter, *, email: str, first_name: str, last_name: str,
                     postal_code: str, country: str) -> None:
    """Save profile fields; raise ProfileInvalid (nothing written) with every problem."""
    errors = profile_problems(supporter, email=email, first_name=first_name, last_name=last_name,
                              postal_code=postal_code, country=country)
    if errors:
        raise ProfileInvalid(errors)
    supporter.email = normalise_email(email)
    supporter.first_name = (first_name or "").strip()
    supporter.last_name = (last_name or "").strip()
    supporter.postal_code = (postal_code or "").strip().upper()
    supporter.country = (country or "").strip().upper()
    try:
        db.session.commit()
    except IntegrityError:  # lost a race with another writer taking the address
        db.session.rollback()
        raise ProfileInvalid({"email": ["Another supporter already has this email address."]}) from None


def save_notes(supporter: Supporter, notes: str) -> None:
    supporter.notes = (notes or "")[:20000]
    db.session.commit()


def staff_unsubscribe(supporter: Supporter, staff_id: int, reason: str) -> ConsentEvent:
    """Record an opt-out on the supporter's behalf (e.g. they asked by phone); reason required."""
    reason = (reason or "").strip()
    if not reason:
        raise SupporterError("Give a reason (for example how the supporter asked).")
    if supporter.email_status not in ("subscribed", "bouncing"):
        raise SupporterError(f"This supporter is {supporter.email_status.replace('_', ' ')}, "
                             "not subscribed: there is nothing to unsubscribe.")
    event = record_consent(supporter, "opt_out", f"staff:{staff_id}", reason=reason[:2000])
    db.session.commit()
    return event


def staff_resubscribe(supporter: Supporter, staff_id: int, reason: str) -> ConsentEvent:
    """Resubscribe someone who left (or bounced) at their own request; never complainers,
    never people who never consented, never suppressed addresses."""
    reason = (reason or "").strip()
    if not reason:
        raise SupporterError("Give a reason (for example how the supporter asked to rejoin).")
    if supporter.email_status not in ("unsubscribed", "bouncing"):
        raise SupporterError(
            f"This supporter is {supporter.email_status.replace('_', ' ')}: only unsubscribed or "
            "bouncing supporters can be resubscribed by staff.")
    listed = entry_for(supporter.email) if supporter.email else None
    if listed is not None and listed.reason in REMOVABLE:
        raise SupporterError(f"This address is on the suppression list ({listed.reason}). Remove it from the "
                             "list first, with a reason, if the supporter really asked to rejoin.")
    if listed is not None:
        raise SupporterError("This address is on the suppression list and can never be mailed again.")
    event = record_consent(supporter, "resubscribe", f"staff:{staff_id}", reason=reason[:2000])
    db.session.commit()
    return event


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def subject_access_export(supporter: Supporter) -> dict:
    """Everything we hold about one supporter (GDPR art. 15), as JSON-ready data; audit-logged."""
    events = list(db.session.scalars(supporter.consent_events.select().order_by(ConsentEvent.id)))
    data = {
        "supporter": {
            "id": supporter.id, "email": supporter.email, "first_name": supporter.first_name,
            "last_name": supporter.last_name, "postal_code": supporter.postal_code,
            "country": supporter.country, "email_status": supporter.email_status,
            "source": supporter.source, "custom_fields": supporter.custom_fields or {},
            "notes": supporter.notes, "created_at": _iso(supporter.created_at),
            "updated_at": _iso(supporter.updated_at),
        },
        "tags": sorted(t.name for t in supporter.tags),
        "signatures": [
            {"petition_id": p.id, "petition_slug": p.slug, "petition_title": p.title,
             "signed_at": _iso(s.created_at), "comment": s.comment, "source": s.source}
            for s, p in reversed(petitions_signed(supporter))
        ],
        "consent_events": [
            {"id": e.id, "action": e.action, "source": e.source, "wording": e.wording,
             "wording_version": e.wording_version, "wording_id": e.wording_id, "reason": e.reason,
             "ip": e.ip, "user_agent": e.user_agent, "created_at": _iso(e.created_at)}
            for e in events
        ],
        "messages": [
            {"campaign_id": m.campaign_id, "campaign": name, "email": m.email, "status": m.status,
             "created_at": _iso(m.created_at), "sent_at": _iso(m.sent_at), "opened_at": _iso(m.opened_at),
             "clicked_at": _iso(m.clicked_at)}
            for m, name in reversed(messages_received(supporter, limit=None))
        ],
        "exported_at": _iso(utcnow()),
    }
    audit.record("supporter.dsar_export", f"supporter:{supporter.id}")
    db.session.commit()
    return data


def erase_supporter(supporter: Supporter, staff_id: int) -> None:
    """Right to erasure (GDPR art. 17): wipe personal data, keep anonymous counts, suppress the address.

    - The row stays, anonymised (email NULL, names/postcode/country/notes/custom fields empty,
      erased_at set), so its signatures stay linked and petition counts stay right; signature
      comments are wiped because they are free text written by the person.
    - Consent events stay (counts, history) but lose IP and user agent: consent proof is only
      needed to justify mailing, and an erased supporter is never mailed again.
    - Messages stay (campaign counts) but lose the address they were sent to and any SMTP error.
    - The SHA-256 of the address goes on the suppression list, so a re-import or a new
      signature with the same address is never mailed.
    """
    address = supporter.email
    if supporter.email_status in ("subscribed", "bouncing"):
        record_consent(supporter, "opt_out", f"staff:{staff_id}", reason="erased on request")
    if address:
        suppress(address, reason="erased")
    supporter.email = None
    supporter.first_name = supporter.last_name = supporter.postal_code = supporter.country = ""
    supporter.source = supporter.notes = ""
    supporter.custom_fields = {}
    supporter.erased_at = utcnow()
    db.session.execute(delete(supporter_tag).where(supporter_tag.c.supporter_id == supporter.id))
    db.session.execute(db.update(Signature).where(Signature.supporter_id == supporter.id)
                       .values(comment=""))
    db.session.execute(db.update(ConsentEvent).where(ConsentEvent.supporter_id == supporter.id)
                       .values(ip=None, user_agent=None))
    # Messages keep their rows (campaign counts, "received" segment conditions) but not the
    # address, nor the SMTP error text, which often quotes it ("550 <ana@...>: no such user").
    db.session.execute(db.update(Message).where(Message.supporter_id == supporter.id)
                       .values(email=None, error="").execution_options(synchronize_session=False))
    audit.record("supporter.erase", f"supporter:{supporter.id}", actor_id=staff_id)
    db.session.commit()
    db.session.expire(supporter)


# --- export rows -----------------------------------------------------------------------------

EXPORT_HEADER = ["id", "email", "first_name", "last_name", "postal_code", "country",
                 "email_status", "created_at", "tags"]


def export_rows(flt: SupporterFilter) -> Iterator[list]:
    """Rows for EXPORT_HEADER in id order, fetched in batches of EXPORT_BATCH with a server-side
    cursor (yield_per), tags fetched once per batch: memory stays flat at any size."""
    columns = (Supporter.id, Supporter.email, Supporter.first_name, Supporter.last_name,
               Supporter.postal_code, Supporter.country, Supporter.email_status,
               Supporter.created_at)
    query = (filtered_query(flt).with_only_columns(*columns).order_by(Supporter.id)
             .execution_options(yield_per=EXPORT_BATCH))
    result = db.session.execute(query)
    for batch in result.partitions():
        ids = [row[0] for row in batch]
        tags: dict[int, list[str]] = {}
        for supporter_id, name in db.session.execute(
            db.select(supporter_tag.c.supporter_id, Tag.name)
            .join(Tag, Tag.id == supporter_tag.c.tag_id)
            .where(supporter_tag.c.supporter_id.in_(ids)).order_by(Tag.name)
        ):
            tags.setdefault(supporter_id, []).append(name)
        for row in batch:
            yield [*row, ";".join(tags.get(row[0], ()))]


def record_export(flt: SupporterFilter, fmt: str, rows: int, actor_id: int | None = None) -> None:
    audit.record("supporters.export", "supporters", actor_id=actor_id, filter=flt.as_args(),
                 format=fmt, rows=rows)
    db.session.commit()


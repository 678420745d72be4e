"""Compile a validated rule tree into ONE SQL query over supporter, the same on SQLite and PostgreSQL.

Every condition becomes a boolean expression on the outer supporter row: a plain column test,
or an EXISTS / NOT EXISTS subquery correlated on supporter.id. Groups become AND / OR / NOT(OR).
A referenced segment's tree is compiled inline the same way (no subquery of ids), so the
database sees one statement and plans it as a whole; nothing is filtered in Python and no
query runs per supporter. Every value from the tree is a bound parameter; only the compiler's
own constant for an engagement event's kind is written out (see KIND_SQL).

Every expression is two-valued (never NULL), so NOT over a group means "does not match":
the custom-field tests guard against a missing key explicitly.
Erased supporters (erased_at set) are always excluded at the top.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    exists,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from crm.database import plan_for_these_values
from crm.extensions import db
from crm.models import EngagementEvent, Message, Signature, Supporter, supporter_tag, utcnow
from crm.segments.rules import ValidatedRules, validate

supporter = Supporter.__table__
signature = Signature.__table__
message = Message.__table__
engagement_event = EngagementEvent.__table__


# -- Dialect-specific pieces ------------------------------------------------------------------
# A custom field's value as text, or NULL when missing, null, an object or an array.
# PostgreSQL: ->> on the json column gives strings unquoted and numbers/booleans as written
# (true/false). SQLite's json_extract gives 1/0 for booleans, so json_type maps them back to
# 'true'/'false' and CAST renders numbers; the two agree for values Python's json wrote.
class custom_field_text(FunctionElement):
    type = String()
    name = "custom_field_text"
    inherit_cache = True


@compiles(custom_field_text)
def _custom_field_text_sqlite(element, compiler, **kw):
    column, key = list(element.clauses)
    col, k = compiler.process(column, **kw), compiler.process(key, **kw)
    path = f"('$.\"' || {k} || '\"')"
    return (f"CASE json_type({col}, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
            f"WHEN 'object' THEN NULL WHEN 'array' THEN NULL WHEN 'null' THEN NULL "
            f"ELSE CAST(json_extract({col}, {path}) AS TEXT) END")


@compiles(custom_field_text, "postgresql")
def _custom_field_text_pg(element, compiler, **kw):
    column, key = list(element.clauses)
    col, k = compiler.process(column, **kw), compiler.process(key, **kw)
    return (f"CASE json_typeof({col} -> {k}) WHEN 'object' THEN NULL WHEN 'array' THEN NULL "
            f"ELSE ({col} ->> {k}) END")


# Case-sensitive substring test without LIKE (LIKE is case-insensitive on SQLite only, and
# would need wildcard escaping): instr() on SQLite, strpos() on PostgreSQL.
class text_position(FunctionElement):
    type = db.Integer()
    name = "text_position"
    inherit_cache = True


@compiles(text_position)
def _text_position_sqlite(element, compiler, **kw):
    haystack, needle = list(element.clauses)
    return f"instr({compiler.process(haystack, **kw)}, {compiler.process(needle, **kw)})"


@compiles(text_position, "postgresql")
def _text_position_pg(element, compiler, **kw):
    haystack, needle = list(element.clauses)
    return f"strpos({compiler.process(haystack, **kw)}, {compiler.process(needle, **kw)})"


# ASCII-only upper(): SQLite's built-in upper() folds ASCII letters only, and so does
# PostgreSQL's under COLLATE "C" (asc_toupper), so both agree on every string. It is also much
# cheaper on PostgreSQL than upper() under the database's UTF-8 locale, which converts each
# value to wide characters: bench_segments, 1M supporters, the postal-prefix test alone went
# from 440 ms to 232 ms of seq-scan filtering.
class ascii_upper(FunctionElement):
    type = String()
    name = "ascii_upper"
    inherit_cache = True


@compiles(ascii_upper)
def _ascii_upper_sqlite(element, compiler, **kw):
    (value,) = list(element.clauses)
    return f"upper({compiler.process(value, **kw)})"


@compiles(ascii_upper, "postgresql")
def _ascii_upper_pg(element, compiler, **kw):
    (value,) = list(element.clauses)
    return f'upper(({compiler.process(value, **kw)}) COLLATE "C")'


# -- Public functions --------------------------------------------------------------------------
def _validated(rules: Any) -> ValidatedRules:
    return rules if isinstance(rules, ValidatedRules) else validate(rules)


def segment_condition(rules: Any) -> ColumnElement[bool]:
    """The WHERE clause selecting the tree's supporters (erased ones excluded)."""
    validated = _validated(rules)
    return and_(supporter.c.erased_at.is_(None), _node(validated.tree, validated))


def segment_query(rules: Any) -> Select:
    """SELECT supporter.id for everyone the tree matches, as one statement."""
    # Shape: SELECT id FROM supporter WHERE erased_at IS NULL AND <predicate tree>; the
    # campaign snapshot wraps it in INSERT ... SELECT.
    return select(supporter.c.id).where(segment_condition(rules))


def count(rules: Any) -> int:
    """How many supporters the tree matches now."""
    # Shape: SELECT count(*) FROM supporter WHERE ... (no subquery of ids to materialise).
    # EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, bench_segments: 1M supporters, 3M signatures,
    # 10M engagement events, the five conditions (33k match). The planner must know how
    # many rows the column tests keep, and with migration 0007 it does (see _postal_code): a
    # parallel scan of supporter keeps 280k, a hash semi-join on the 283k signatures of the two
    # petitions (an index-only scan of uq_signature_petition_supporter) and a hash anti-join on
    # the 30k tagged supporters cut that to 74k, and only then does NOT EXISTS probe
    # ix_engagement_event_open_supporter_created, 74k index-only probes of 3.3 buffers each.
    # bench_segments on a shared 2-core machine: 0.36-0.84 s with other work running, median of
    # 15 runs 0.47 s, about 0.39 s when idle; before 0007, same data, 0.79 s (0.56 s idle).
    # Before, the planner expected 2.9k rows per worker out of the scan instead of 93k, so it
    # probed the 10M events 280k times, then signatures 125k times and tags 34k times.
    # The event probes are still about a third of the time, mostly index pages read back from
    # the OS cache (shared_buffers 128 MB there); only a per-supporter "last opened" column
    # would remove them.
    #
    # A generic plan loses part of this: it cannot see the prefixes or the status, guesses
    # again, and hashes the signatures per worker (0.56 s against 0.41 s, EXPLAIN ANALYZE on an
    # idle machine). psycopg server-prepares a statement on its 6th run on one connection and
    # PostgreSQL switches to a generic plan from the 11th, so a connection that counts the same
    # segment over and over would get there: counts are planned for their values instead.
    plan_for_these_values()
    return db.session.scalar(select(func.count()).select_from(supporter).where(segment_condition(rules)))


def sample(rules: Any, n: int = 20) -> list[dict[str, Any]]:
    """The newest `n` matching supporters with email, name and status."""
    # Shape: ... ORDER BY created_at DESC, id DESC LIMIT n; ties broken by id so it is stable.
    # EXPLAIN: Index Scan Backward on ix_supporter_created_at_id, testing each supporter's
    # EXISTS probes until n match (7 ms on 1M supporters; 451 ms with a sort before the index;
    # 3-4 ms with 10M events and migration 0007). SQLite walks the same index (200k supporters,
    # 2M events: 3-4 ms).
    rows = db.session.execute(
        select(supporter.c.id, supporter.c.email, supporter.c.first_name, supporter.c.last_name,
               supporter.c.email_status, supporter.c.created_at)
        .where(segment_condition(rules))
        .order_by(supporter.c.created_at.desc(), supporter.c.id.desc())
        .limit(n)
    ).all()
    return [{"id": r.id, "email": r.email or "", "name": " ".join(p for p in (r.first_name, r.last_name) if p),
             "email_status": r.email_status} for r in rows]


# -- The tree ----------------------------------------------------------------------------------
def _node(node: dict[str, Any], ctx: ValidatedRules) -> ColumnElement[bool]:
    if node["type"] == "group":
        parts = [_node(child, ctx) for child in node["rules"]]
        if node["match"] == "all":
            return and_(true(), *parts) if parts else true()  # empty "all": everyone
        if node["match"] == "any":
            return or_(false(), *parts) if parts else false()  # empty "any": no one
        return not_(or_(false(), *parts)) if parts else true()  # empty "none": everyone
    return CONDITIONS[node["field"]](node["op"], node["value"], ctx)


def _start_of(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time.min, tzinfo=UTC)


def _end_of(day: str) -> datetime:
    """Exclusive upper bound: midnight after the given (inclusive) day, UTC."""
    return _start_of(day) + timedelta(days=1)


def _time_window(column, value: dict[str, Any]) -> list[ColumnElement[bool]]:
    window = []
    if "since_days" in value:
        window.append(column >= utcnow() - timedelta(days=value["since_days"]))
    if "date_from" in value:
        window.append(column >= _start_of(value["date_from"]))
    if "date_to" in value:
        window.append(column < _end_of(value["date_to"]))
    return window


def _petitions(op: str, value: dict[str, Any], ctx) -> ColumnElement[bool]:
    # EXISTS (SELECT 1 FROM signature WHERE supporter_id = supporter.id AND petition_id IN (...)
    #         [AND created_at in window]) — walks ix_signature_supporter_petition per supporter,
    # or, when the planner prefers, ix_signature_petition_created into a semi-join.
    def signed(ids: list[int]):
        return exists().where(signature.c.supporter_id == supporter.c.id,
                              signature.c.petition_id.in_(ids),
                              *_time_window(signature.c.created_at, value))

    ids = value["petition_ids"]
    if op == "any_of":
        return signed(ids)
    if op == "none_of":
        return ~signed(ids)
    # all_of: one EXISTS per petition (AND), each an index probe; simpler to plan than
    # GROUP BY ... HAVING count(DISTINCT petition_id) = n.
    return and_(*(signed([ident]) for ident in ids))


def _tags(op: str, value: list[int], ctx) -> ColumnElement[bool]:
    # EXISTS (SELECT 1 FROM supporter_tag WHERE supporter_id = supporter.id AND tag_id IN (...)):
    # the primary key (supporter_id, tag_id) answers it per supporter.
    def tagged(ids: list[int]):
        return exists().where(supporter_tag.c.supporter_id == supporter.c.id,
                              supporter_tag.c.tag_id.in_(ids))

    if op == "any_of":
        return tagged(value)
    if op == "none_of":
        return ~tagged(value)
    return and_(*(tagged([ident]) for ident in value))


def _email_status(op: str, value: list[str], ctx) -> ColumnElement[bool]:
    return supporter.c.email_status.in_(value)


def _country(op: str, value: list[str], ctx) -> ColumnElement[bool]:
    # Countries are stored upper-case (the supporter form and imports normalise them).
    return supporter.c.country.in_(value)


def _postal_code(op: str, value: list[str], ctx) -> ColumnElement[bool]:
    # Postal codes are stored as typed, so compare the ASCII-upper-cased code with the
    # upper-cased prefix: upper(postal_code COLLATE "C") LIKE 'SW1%'. Prefixes are validated
    # to [A-Z0-9 -], so they hold no LIKE wildcard and need no escaping, and SQLite's LIKE
    # (ASCII case-insensitive) agrees. One expression for every prefix length, so one
    # expression index on PostgreSQL (ix_supporter_postal_upper, migration 0007) gives the
    # planner real statistics and, for a narrow prefix, an index range scan (LIKE 'SW1%' becomes
    # >= 'SW1' AND < 'SW2', the index being in "C" order). Without it the planner guesses 0.5%
    # per prefix: bench_segments (1M supporters, 10M events) matched 40%, estimated 2.9k rows
    # per worker for 93k, and chose nested-loop probes of 10M events first (see count). The
    # statistics come from ANALYZE, not CREATE INDEX, hence the ANALYZE in the migration.
    # substr() = prefix performed the same as LIKE without the index.
    return or_(*(ascii_upper(supporter.c.postal_code).like(prefix + "%") for prefix in value))


def _created(op: str, value: dict[str, Any], ctx) -> ColumnElement[bool]:
    return and_(true(), *_time_window(supporter.c.created_at, value))


def _source(op: str, value: str, ctx) -> ColumnElement[bool]:
    return func.substr(supporter.c.source, 1, len(value)) == value


def _segment(op: str, value: int, ctx: ValidatedRules) -> ColumnElement[bool]:
    # The referenced segment's tree is inlined as a predicate on the same supporter row.
    _, inner = ctx.segments[value]
    predicate = _node(inner.tree, inner)
    return predicate if op == "member" else not_(predicate)


def _custom_field(op: str, value: dict[str, str], ctx) -> ColumnElement[bool]:
    text = custom_field_text(supporter.c.custom_fields, value["key"])
    if op == "equals":
        test = text == value["value"]
    else:
        test = text_position(text, value["value"]) > 0
    # IS NOT NULL first keeps the result two-valued when the key is missing.
    return and_(text.is_not(None), test)


def _since(value: dict[str, Any]) -> datetime | None:
    return utcnow() - timedelta(days=value["within_days"]) if "within_days" in value else None


def _received(value: dict[str, Any]) -> list[ColumnElement[bool]]:
    """WHERE terms for "a message to this supporter that the server accepted" (status sent)."""
    terms = [message.c.supporter_id == supporter.c.id, message.c.status == "sent"]
    if "campaign_id" in value:
        terms.append(message.c.campaign_id == value["campaign_id"])
    since = _since(value)
    if since is not None:
        terms.append(message.c.sent_at >= since)
    return terms


ENGAGEMENT_KIND = {"opened": "open", "not_opened": "open", "never_opened": "open",
                   "clicked": "click", "not_clicked": "click"}
# The kind is the one value written into the SQL rather than bound: it is the compiler's own
# constant, never user input, and the partial indexes ix_engagement_event_{open,click}_supporter_
# created (WHERE kind = 'open' / 'click') are only usable where the planner can see it. A bound
# kind works in a custom plan, but psycopg prepares a statement on its sixth run on a connection
# and PostgreSQL then switches to a generic plan, which cannot prove "kind = $n" implies the
# index predicate: the segment then hashed a parallel seq scan of all 10M events (1.4 s
# against 0.56 s with the literal). SQLite matches bound values against the predicate itself.
KIND_SQL = {kind: literal_column(f"'{kind}'", String) for kind in ("open", "click")}


def _engagement(op: str, value: dict[str, Any], ctx) -> ColumnElement[bool]:
    if op in ("received_at_least", "received_at_most"):
        # Correlated COUNT: (SELECT count(*) FROM message WHERE supporter_id = supporter.id
        # AND status = 'sent' [AND sent_at >= :since]) >= / <= :n, an index-only range scan of
        # ix_message_supporter_status_sent per supporter. Never NULL: count of nothing is 0, so
        # "at most" keeps the people never mailed. "At least 1" is plain EXISTS (stops at a row).
        if op == "received_at_least" and value["count"] == 1:
            return exists().where(*_received(value))
        sent = select(func.count()).select_from(message).where(*_received(value)).scalar_subquery()
        return sent >= value["count"] if op == "received_at_least" else sent <= value["count"]
    if op in ("received", "not_received"):
        # EXISTS (SELECT 1 FROM message WHERE supporter_id = supporter.id AND status = 'sent'
        #         [AND campaign_id = :c] [AND sent_at >= :since]): ix_message_supporter_status_sent
        # answers it per supporter, or uq_message_campaign_supporter for one campaign (the
        # planner may instead hash the campaign's recipients into a semi-join).
        found = exists().where(*_received(value))
        return found if op == "received" else ~found
    # EXISTS (SELECT 1 FROM engagement_event WHERE supporter_id = supporter.id AND kind = 'open'
    #         [AND campaign_id = :c] [AND created_at >= :since]): supporter_id is denormalised
    # onto the event so no join through message is needed, and the kind's partial index,
    # (supporter_id, created_at) WHERE kind = 'open' (or 'click'), answers it per supporter with
    # an index-only probe (a campaign_id test reads the heap too). At 10M events the open index
    # is 257-326 MB against 390-469 MB for the (supporter_id, kind, created_at) index it replaced
    # (freshly built / grown by inserts). The segment's 74k probes took about 230 ms of
    # EXPLAIN ANALYZE time with the old index and 155-190 ms with the partial one, reading 30%
    # fewer pages from the OS cache (29.6k instead of 42.7k).
    terms = [engagement_event.c.supporter_id == supporter.c.id,
             engagement_event.c.kind == KIND_SQL[ENGAGEMENT_KIND[op]]]
    if "campaign_id" in value:
        terms.append(engagement_event.c.campaign_id == value["campaign_id"])
    since = _since(value)
    if since is not None:
        terms.append(engagement_event.c.created_at >= since)
    if value.get("people_only"):
        # People only: the probe reads the heap for the flag, per supporter, after the index
        # has found the candidate events.
        terms.append(engagement_event.c.is_machine.is_(False))
    found = exists().where(*terms)
    return found if op in ("opened", "clicked") else ~found


CONDITIONS = {
    "petitions": _petitions,
    "email_status": _email_status,
    "tags": _tags,
    "country": _country,
    "postal_code": _postal_code,
    "created": _created,
    "source": _source,
    "segment": _segment,
    "custom_field": _custom_field,
    "engagement": _engagement,
}

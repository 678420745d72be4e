"""The sending pipeline's SQL: snapshot, claim, record, release, count. One place, with reasons.

Every statement is the same on SQLite and PostgreSQL except where a comment says otherwise.
The guarantee against double sends lives here, not in the queue: a message row moves
queued -> sending exactly once (the claim is one UPDATE whose WHERE re-checks `status =
'queued'`; under PostgreSQL's READ COMMITTED a second claimer re-evaluates that predicate on
the updated row and skips it, and SKIP LOCKED stops it from waiting), and nothing ever moves a
row back from `sending` except the worker that claimed it, before it sent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, exists, func, insert, literal, or_, select, text, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import String

from crm.extensions import db
from crm.models import Message, Petition, Signature, Supporter, Suppression

message = Message.__table__
supporter = Supporter.__table__


class sha256_hex(FunctionElement):
    """SHA-256 hex digest of a text column, as the suppression list stores addresses."""

    type = String()
    name = "sha256_hex"
    inherit_cache = True


@compiles(sha256_hex, "postgresql")
def _sha256_pg(element, compiler, **kw):
    return f"encode(sha256(convert_to({compiler.process(element.clauses, **kw)}, 'UTF8')), 'hex')"


@compiles(sha256_hex, "sqlite")
def _sha256_sqlite(element, compiler, **kw):
    return f"crm_sha256_hex({compiler.process(element.clauses, **kw)})"  # see crm/database.py


def mailable():
    """Who may be mailed at all: subscribed, an address, not erased, not on the suppression list."""
    return and_(
        Supporter.email_status == "subscribed",
        Supporter.email.is_not(None),
        Supporter.erased_at.is_(None),
        ~exists().where(Suppression.email_hash == sha256_hex(Supporter.email)),
    )


def not_paused(now: datetime):
    """Not pausing updates at `now` (the preference page's pause): back by themselves after the date."""
    return or_(Supporter.paused_until.is_(None), Supporter.paused_until <= now)


def snapshot(campaign_id: int, segment_condition, now: datetime) -> int:
    """Insert one queued message per mailable member of the segment; return how many.

    Supporters pausing updates until after `now` are left out (they come back by themselves).

    One INSERT ... SELECT: no Python loop over people. Ordered by supporter id so the new
    message ids are dense and batches over id ranges come out even. The suppression test is an
    anti-join on the hashed address (unique index on suppression.email_hash). No ON CONFLICT:
    the caller moved the campaign to `sending` in this same transaction, so a second run never
    gets here, and the unique (campaign_id, supporter_id) index would refuse a duplicate anyway;
    speculative insertion would only add cost. EXPLAIN ANALYZE, 200,000 supporters (bench_send):
    the anti-join and index scan take 0.4 s; inserting the rows and their three indexes most of
    the rest (message carries no foreign keys: see crm/models/campaigns.py).
    """
    rows = (
        select(literal(campaign_id), Supporter.id, Supporter.email, literal("queued"), literal(0),
               literal(""), literal(now))
        .where(segment_condition, mailable(), not_paused(now))
        .order_by(Supporter.id)
    )
    stmt = insert(Message).from_select(
        ["campaign_id", "supporter_id", "email", "status", "attempts", "error", "created_at"], rows)
    db.session.execute(stmt)
    # Counted rather than read from rowcount, which psycopg reports as -1 for this statement.
    return db.session.scalar(select(func.count()).select_from(Message).where(Message.campaign_id == campaign_id))


def id_bounds(campaign_id: int, status: str = "queued") -> tuple[int | None, int | None]:
    row = db.session.execute(
        select(func.min(Message.id), func.max(Message.id))
        .where(Message.campaign_id == campaign_id, Message.status == status)
    ).one()
    return row[0], row[1]


def claim(campaign_id: int, after_id: int, upto_id: int, holder: str, limit: int, now: datetime) -> list:
    """Move up to `limit` queued rows with ids in (after_id, upto_id] to `sending`; return them.

    The caller commits (durably: the claim must be on disk before anything is sent), after
    adding what belongs in the same transaction.

    The chosen ids come from a CTE: PostgreSQL materialises a CTE with FOR UPDATE exactly once,
    whereas `WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` may be re-evaluated by the
    planner and claim more than n rows (seen here: LIMIT 1 claimed 10). The CTE walks
    ix_message_campaign_status_id in id order. SKIP LOCKED (PostgreSQL only; SQLite has one
    writer at a time and SQLAlchemy leaves it out there) lets workers on overlapping ranges take
    disjoint rows without waiting; the outer `status = 'queued'` re-check makes the claim exact.
    """
    m = message.c
    chosen = (
        select(m.id)
        .where(m.campaign_id == campaign_id, m.status == "queued", m.id > after_id, m.id <= upto_id)
        .order_by(m.id).limit(limit)
        .with_for_update(skip_locked=True)
        .cte("claimable")
    )
    # Core, not the ORM entity: the ORM's bulk-UPDATE machinery costs milliseconds per call here.
    stmt = (
        update(message)
        .where(m.id == chosen.c.id, m.status == "queued")
        .values(status="sending", claimed_by=holder, claimed_at=now, attempts=m.attempts + 1)
        .returning(m.id, m.supporter_id, m.variant_id)
    )
    return sorted(db.session.execute(stmt).all(), key=lambda r: r.id)


def recipients(supporter_ids: list[int], with_petitions: bool = True) -> dict[int, dict]:
    """Fresh supporter rows for a claimed chunk: consent is re-checked on these, just before sending."""
    if not supporter_ids:
        return {}
    found = db.session.execute(
        select(Supporter.id, Supporter.email, Supporter.first_name, Supporter.last_name,
               Supporter.postal_code, Supporter.country, Supporter.custom_fields,
               and_(mailable()).label("is_mailable"))
        .where(Supporter.id.in_(supporter_ids))
    ).mappings().all()
    people = {row["id"]: dict(row) for row in found}
    for row in people.values():
        row["petitions"] = []
    if not with_petitions:
        return people
    for supporter_id, title in db.session.execute(
        select(Signature.supporter_id, Petition.title).join(Petition, Petition.id == Signature.petition_id)
        .where(Signature.supporter_id.in_(supporter_ids)).order_by(Signature.created_at)
    ):
        people[supporter_id]["petitions"].append(title)
    return people


def mailable_among(supporter_ids: list[int | None]) -> set[int]:
    """Which of these supporters may still be mailed: the send loop's fallback when it may
    have missed a withdrawal notice (crm/supporters/withdrawn.py). A primary-key lookup."""
    ids = [i for i in supporter_ids if i is not None]
    if not ids:
        return set()
    return set(db.session.scalars(select(Supporter.id).where(Supporter.id.in_(ids), mailable())))


# Outcomes are written in batches by primary key (executemany; psycopg 3 pipelines it), so
# the database is not the bottleneck, while the window of "sent but not yet recorded" stays
# at one flush (a few dozen messages at most).
_RECORD = (
    update(message)
    .where(message.c.id == bindparam("mid"), message.c.status == "sending")
    .values(status=bindparam("new_status"), sent_at=bindparam("new_sent_at"),
            smtp_message_id=bindparam("new_smtp_id"), error=bindparam("new_error"),
            # The address it went to when sent (it may have changed since the snapshot); a
            # failure keeps the snapshot's, so staff can see which address failed.
            email=func.coalesce(bindparam("new_email", type_=String), message.c.email))
)


def record(outcomes: list[dict], commit: bool = True) -> None:
    """Write outcomes: dicts with mid, new_status, new_sent_at, new_smtp_id, new_error, new_email.

    On PostgreSQL this commit does not wait for the WAL flush (synchronous_commit off for this
    transaction only): if the server crashed and lost it, the rows would read `sending` again and
    become `unknown`, never be resent. Claims, by contrast, are committed durably before sending.
    With `commit=False` the outcomes join the caller's transaction (the next claim's).
    """
    if outcomes:
        if commit and db.engine.dialect.name == "postgresql":
            db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        db.session.execute(_RECORD, outcomes)
        if commit:
            db.session.commit()


def release(message_ids: list[int], holder: str, to_status: str = "queued", error: str = "") -> None:
    """Give back rows this worker claimed but did not send (pause, cancel, relay down)."""
    if message_ids:
        db.session.execute(
            update(Message)
            .where(Message.id.in_(message_ids), Message.status == "sending", Message.claimed_by == holder)
            .values(status=to_status, claimed_by=None, **({"error": error} if error else {}))
            .execution_options(synchronize_session=False)
        )
        db.session.commit()


def holders_in_flight(campaign_id: int) -> list[str]:
    return list(db.session.scalars(
        select(Message.claimed_by).where(Message.campaign_id == campaign_id, Message.status == "sending")
        .distinct()
    ))


def mark_unknown(campaign_id: int, holder: str) -> int:
    """Rows a dead batch claimed: maybe sent, maybe not. Never resent; shown to staff."""
    result = db.session.execute(
        update(Message)
        .where(Message.campaign_id == campaign_id, Message.status == "sending", Message.claimed_by == holder)
        .values(status="unknown", error="the sending worker stopped before recording the outcome")
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount


def status_counts(campaign_id: int) -> dict[str, int]:
    """Messages per status: one GROUP BY over the campaign's slice of the (campaign_id, status) index."""
    return dict(db.session.execute(
        select(Message.status, func.count()).where(Message.campaign_id == campaign_id).group_by(Message.status)
    ).all())


def sent_since(campaign_id: int, since: datetime) -> int:
    return db.session.scalar(
        select(func.count()).select_from(Message)
        .where(Message.campaign_id == campaign_id, Message.status == "sent", Message.sent_at >= since)
    ) or 0


def cancel_queued(campaign_id: int) -> int:
    result = db.session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status.in_(("queued", "held")))
        .values(status="cancelled")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def retry_exhausted(campaign_id: int, max_attempts: int) -> int:
    """Queued rows that have been tried too often become failed (persistent 4xx)."""
    result = db.session.execute(
        update(Message)
        .where(Message.campaign_id == campaign_id, Message.status == "queued",
               Message.attempts >= max_attempts)
        .values(status="failed", error="the relay kept deferring this message")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount

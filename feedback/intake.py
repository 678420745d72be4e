"""The webhook intake: what a relay's request reports waits in feedback_intake until a worker applies it.

Why: a bounce or complaint is about nine statements and a durable commit in apply_feedback()
(about 15 ms on the bench machine), and a relay's burst is thousands of them. So the request
authenticates and parses as before (feedback/providers/), then accept():

- deliveries that carry our ref or Message-ID go to a Redis stream in one round trip, and the
  workers stamp them in batches (feedback/deliveries.py); with Redis away, the request stamps
  them itself (apply.record_deliveries: one relaxed autocommit UPDATE each, idempotent by its
  own WHERE delivered_at IS NULL);
- everything else but delays (which change nothing) is written in ONE durable multi-row
  INSERT ... ON CONFLICT (provider, event_id) DO NOTHING, which also skips events that
  feedback_event holds already (a provider retrying after the apply); the provider is answered
  200 only after that commit, so nothing it was told we took can be lost.

A worker applies the rows in batches (apply_waiting) with apply_feedback(), the one service
for the rules. A batch is claimed by DELETE ... RETURNING (on PostgreSQL over SELECT ... FOR
UPDATE SKIP LOCKED, so two workers take different rows; on SQLite the DELETE takes the
database's write lock), applied and committed in one transaction: a worker dying mid-batch
rolls the DELETE back with everything it applied, and the rows wait for the next run. Applied
twice (a retry that arrived after the apply), an event meets feedback_event's unique key and
changes nothing. A row that fails on its own (a bug meeting an odd payload) is kept with
failed_at and its error class, skipped from then on, and counted on the list-health page.

Promptly: after a commit that queued rows (or streamed deliveries), the request enqueues the apply job unless one is
queued or running (a Redis key set with NX; the job deletes it when it finds the intake
empty, and it expires after KICK_SECONDS in case the job was lost); every worker also sweeps
the intake as a periodic task, every FEEDBACK_INTAKE_SWEEP_SECONDS. A complaint applied by the
worker is announced to sending batches at its commit (crm/supporters/withdrawn.py), so a
campaign sending now skips the person from then on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import RedisError
from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from crm.extensions import db
from crm.models import FeedbackEvent, FeedbackIntake, utcnow
from feedback.apply import Batch, apply_feedback, check_complaint_rate, record_deliveries, split_deliveries
from feedback.deliveries import flush as flush_deliveries
from feedback.deliveries import record as record_to_stream
from feedback.types import Feedback

log = logging.getLogger(__name__)

BATCH = 500  # rows applied per transaction
KICK_KEY = "crm:feedback:intake:queued"
KICK_SECONDS = 60  # the key outlives a lost job by at most this; the periodic sweep covers the gap
JOB_SECONDS = 60.0  # one job applies for this long, then hands over to a fresh one
_INTAKE = FeedbackIntake.__table__
_FIELDS = ("provider", "event_id", "kind", "address", "message_ref", "message_id", "hard", "status", "detail",
           "occurred_at", "ref_needs_address")
_INSERTED = (*_FIELDS, "priority")


@dataclass(frozen=True)
class Accepted:
    """What a webhook request handed over: received in all, queued for the worker, duplicates
    (already waiting or already applied), and deliveries stamped at once."""

    received: int
    queued: int
    duplicates: int
    deliveries: int


def _row(fb: Feedback, now) -> dict:
    """One intake row, cut to the columns' widths (as feedback_event stores them)."""
    return {"provider": fb.provider[:20], "event_id": fb.event_id[:200], "kind": fb.kind,
            "address": (fb.address or "")[:320] or None, "message_ref": (fb.message_ref or "")[:200] or None,
            "message_id": (fb.message_id or "")[:1000] or None, "hard": bool(fb.hard), "status": fb.status[:20],
            "detail": fb.detail[:2000], "occurred_at": fb.occurred_at, "ref_needs_address": bool(fb.ref_needs_address),
            "priority": priority(fb), "received_at": now}


def priority(fb: Feedback) -> int:
    """The order a worker applies the intake in: complaints (0), then hard bounces (1), then the rest (2).

    A complaint must stop the mail within seconds even behind a burst of bounces; a hard bounce
    stops mail to a dead address, which matters to the sender's reputation more than a soft one."""
    if fb.kind == "complaint":
        return 0
    return 1 if fb.kind == "bounce" and fb.hard else 2


def accept(feedback: list[Feedback]) -> Accepted:
    """Take a request's feedback: the rest queued durably and committed, then the deliveries
    streamed and the worker kicked (in one Redis round trip when there are deliveries)."""
    deliveries, rest = split_deliveries(feedback)
    waiting = [fb for fb in rest if fb.kind != "delay"]
    queued = _insert(waiting)
    db.session.commit()  # the rows are durable before a kicked job can look for them
    if deliveries:
        _stream(deliveries, queued)
    elif queued:
        kick()
    return Accepted(received=len(feedback), queued=queued, duplicates=len(waiting) - queued,
                    deliveries=len(deliveries))


def _stream(deliveries: list[dict], queued: int) -> None:
    """Hand the deliveries to the workers through the Redis stream (feedback/deliveries.py), with
    the kick's SET NX in the same pipeline: a request's Redis work is one round trip (each wait
    costs a threaded web worker a GIL hand-over under load; two were a third of an SES request).
    With Redis away the deliveries are stamped here and now, as before, so none is lost."""
    from crm.redis_conn import get_redis

    try:
        pipe = get_redis().pipeline(transaction=False)
        record_to_stream(pipe, deliveries)
        pipe.set(KICK_KEY, "1", nx=True, ex=KICK_SECONDS)
        if pipe.execute()[-1]:
            _enqueue_apply()
    except RedisError as exc:
        log.warning("feedback: deliveries not streamed (%s); stamped in the request", type(exc).__name__)
        record_deliveries(deliveries)
        if queued:
            kick()


# PostgreSQL: the request's rows in one statement over arrays (one round trip, one durable commit
# in autocommit on a connection of its own), skipping events already applied (feedback_event's
# unique index answers the NOT EXISTS) or already waiting (ON CONFLICT on our own unique key;
# DO NOTHING also takes a batch that names one event twice).
_INSERT_PG = text(
    "INSERT INTO feedback_intake (provider, event_id, kind, address, message_ref, message_id, hard, status, "
    "detail, occurred_at, ref_needs_address, priority, received_at, error) "
    "SELECT v.provider, v.event_id, v.kind, v.address, v.message_ref, v.message_id, v.hard, v.status, v.detail, "
    "v.occurred_at, v.ref_needs_address, v.priority, :now, '' "
    "FROM unnest(CAST(:provider AS text[]), CAST(:event_id AS text[]), CAST(:kind AS text[]), "
    "CAST(:address AS text[]), CAST(:message_ref AS text[]), CAST(:message_id AS text[]), "
    "CAST(:hard AS boolean[]), CAST(:status AS text[]), CAST(:detail AS text[]), "
    "CAST(:occurred_at AS timestamptz[]), CAST(:ref_needs_address AS boolean[]), CAST(:priority AS smallint[])) "
    "AS v(provider, event_id, kind, address, message_ref, message_id, hard, status, detail, occurred_at, "
    "ref_needs_address, priority) "
    "WHERE NOT EXISTS (SELECT 1 FROM feedback_event e WHERE e.provider = v.provider AND e.event_id = v.event_id) "
    "ON CONFLICT (provider, event_id) DO NOTHING").bindparams(bindparam("now", type_=db.DateTime(timezone=True)))
_SQLITE_CHUNK = 500  # rows per multi-row INSERT: 14 columns stay far below SQLite's variable limit


def _insert(waiting: list[Feedback]) -> int:
    """Queue these events; returns how many were new."""
    if not waiting:
        return 0
    now = utcnow()
    rows = [_row(fb, now) for fb in waiting]
    if db.engine.dialect.name == "postgresql":
        params = {name: [row[name] for row in rows] for name in _INSERTED}
        with db.engine.connect() as conn:
            return conn.execution_options(isolation_level="AUTOCOMMIT").execute(_INSERT_PG, {**params, "now": now}
                                                                               ).rowcount
    # SQLite (one laptop): the applied ones filtered out first, then multi-row INSERTs in the session.
    keys = {(row["provider"], row["event_id"]) for row in rows}
    applied = {tuple(row) for row in db.session.execute(select(FeedbackEvent.provider, FeedbackEvent.event_id).where(
        FeedbackEvent.event_id.in_({event_id for _, event_id in keys})))} & keys
    rows = [row for row in rows if (row["provider"], row["event_id"]) not in applied]
    inserted = 0
    for start in range(0, len(rows), _SQLITE_CHUNK):
        inserted += db.session.execute(sqlite_insert(_INTAKE).values(rows[start:start + _SQLITE_CHUNK])
                                       .on_conflict_do_nothing(index_elements=["provider", "event_id"])).rowcount
    return inserted


def kick() -> None:
    """Have a worker apply the intake soon: enqueue the job unless one is queued or running."""
    from crm.redis_conn import get_redis

    try:
        if get_redis().set(KICK_KEY, "1", nx=True, ex=KICK_SECONDS):
            _enqueue_apply()
    except RedisError as exc:
        # The rows are committed: the workers' periodic sweep applies them without the job.
        log.warning("feedback intake: could not enqueue the apply job (%s); the periodic sweep will apply",
                    type(exc).__name__)


def _enqueue_apply() -> None:
    from crm.queues import APPLY_FEEDBACK, queue

    queue("default").enqueue(APPLY_FEEDBACK, result_ttl=60, failure_ttl=7 * 24 * 3600)


# -- the worker's side -----------------------------------------------------------------------

@dataclass
class IntakeResult:
    claimed: int = 0
    failed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    more: bool = False  # stopped by its limit with rows still waiting


def _claim(size: int) -> list:
    """Delete up to `size` waiting rows, complaints first, then hard bounces, then the rest, oldest
    first in each, and return them (in the caller's transaction).

    The order is ix_feedback_intake_waiting's (priority, id), partial on failed_at IS NULL, so the
    claim reads the first `size` entries of the index and sorts nothing, however long the intake."""
    oldest = (select(FeedbackIntake.id).where(FeedbackIntake.failed_at.is_(None))
              .order_by(FeedbackIntake.priority, FeedbackIntake.id).limit(size))
    if db.engine.dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    rows = db.session.execute(
        delete(FeedbackIntake).where(FeedbackIntake.id.in_(oldest))
        .returning(FeedbackIntake.id, *(getattr(FeedbackIntake, name) for name in _FIELDS))
        .execution_options(synchronize_session=False)).all()
    return sorted(rows, key=lambda row: row.id)


def _feedback(row) -> Feedback:
    return Feedback(provider=row.provider, kind=row.kind, event_id=row.event_id, address=row.address,
                    message_ref=row.message_ref, message_id=row.message_id, hard=row.hard, status=row.status,
                    detail=row.detail, occurred_at=row.occurred_at, ref_needs_address=row.ref_needs_address)


def _apply_batch(size: int, claimed: list[int], result: IntakeResult) -> int:
    """Claim, apply and commit one batch; returns how many rows it held. `claimed` gets their ids
    before anything is applied, so the caller knows them if the batch fails."""
    db.session.commit()  # a fresh transaction: on SQLite the DELETE then takes the write lock first
    rows = _claim(size)
    claimed.extend(row.id for row in rows)
    if not rows:
        db.session.commit()
        return 0
    feedback = [_feedback(row) for row in rows]
    batch = Batch.of(feedback)  # the batch's messages in one query; its engagement events in one INSERT
    applied = [(fb.kind, apply_feedback(fb, commit=False, batch=batch)) for fb in feedback]
    batch.write()
    db.session.commit()
    for _, outcome in applied:
        result.outcomes[outcome.outcome] = result.outcomes.get(outcome.outcome, 0) + 1
    result.claimed += len(rows)
    for campaign_id in {outcome.campaign_id for kind, outcome in applied
                        if kind == "complaint" and outcome.outcome == "applied"}:
        check_complaint_rate(campaign_id)
    return len(rows)


def _mark_failed(intake_id: int, exc: Exception) -> None:
    db.session.execute(update(FeedbackIntake).where(FeedbackIntake.id == intake_id)
                       .values(failed_at=utcnow(), error=type(exc).__name__[:200])
                       .execution_options(synchronize_session=False))
    db.session.commit()


def apply_waiting(*, batch: int = BATCH, max_batches: int | None = None, max_seconds: float | None = None,
                  into: IntakeResult | None = None, between: Callable[[], object] | None = None) -> IntakeResult:
    """Apply what waits in the intake, a batch per transaction, until it is empty or a limit is met.

    `between` runs after each batch that applied rows: the workers flush a batch of deliveries
    there (between_batches), so a long backlog of bounces does not hold the deliveries back."""
    result = into or IntakeResult()
    deadline = time.monotonic() + max_seconds if max_seconds is not None else None
    batches, singles = 0, 0
    while True:
        if (max_batches is not None and batches >= max_batches) or (deadline and time.monotonic() > deadline):
            result.more = True
            return result
        claimed: list[int] = []
        size = 1 if singles else batch
        try:
            found = _apply_batch(size, claimed, result)
        except Exception as exc:
            db.session.rollback()
            if isinstance(exc, OperationalError) and size == 1:
                raise  # the database is away, or a deadlock: the next run tries again
            if size > 1 and claimed:
                # One row spoiled the batch, or two workers deadlocked: the same rows again, one at a
                # time, so that the rest are applied and only a row that fails alone is set aside.
                singles = len(claimed)
                continue
            if not claimed:
                raise
            _mark_failed(claimed[0], exc)
            result.failed += 1
            log.error("feedback intake: row %s could not be applied (%s); kept with failed_at", claimed[0],
                      type(exc).__name__)
            singles -= 1
            continue
        if singles:
            singles -= 1
        batches += 1
        if not found:
            result.more = False
            return result
        if between is not None:
            between()


def between_batches() -> None:
    """What a worker does between two intake batches: stamp one batch of streamed deliveries."""
    flush_deliveries(max_batches=1)


def run_queued() -> IntakeResult:
    """The queued job: apply until the intake is empty (or JOB_SECONDS pass, then hand over to a new job)."""
    from crm.queues import APPLY_FEEDBACK, queue
    from crm.redis_conn import get_redis

    redis = get_redis()
    flush_deliveries(redis)
    result = apply_waiting(max_seconds=JOB_SECONDS, between=between_batches)
    flush_deliveries(redis)
    if result.more:
        redis.set(KICK_KEY, "1", ex=KICK_SECONDS)
        queue("default").enqueue(APPLY_FEEDBACK, result_ttl=60, failure_ttl=7 * 24 * 3600)
        return result
    redis.delete(KICK_KEY)
    # A request that committed rows after our last claim found the key still set and enqueued
    # nothing: whatever it queued is taken now (a request after the delete enqueues its own job).
    result = apply_waiting(max_seconds=JOB_SECONDS, into=result, between=between_batches)
    flush_deliveries(redis)
    return result


def backlog() -> tuple[int, int]:
    """(rows waiting, rows set aside after failing): for the list-health page."""
    waiting, failed = db.session.execute(select(
        func.count(FeedbackIntake.id).filter(FeedbackIntake.failed_at.is_(None)),
        func.count(FeedbackIntake.id).filter(FeedbackIntake.failed_at.is_not(None)))).one()
    return waiting or 0, failed or 0

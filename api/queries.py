"""The API's collection queries: people by keyset whatever page is asked, counts cached briefly.

People are served in (updated_at, id) order, the order a sync wants ("what changed since").
Clients page with OSDI's page numbers; under the hood each page served leaves its last row's
(updated_at, id) in Redis, keyed by the filter and page size, and the next page seeks from it:

    SELECT ... FROM supporter
    WHERE erased_at IS NULL AND updated_at > :since AND (updated_at, id) > (:last_at, :last_id)
    ORDER BY updated_at, id LIMIT 26

PostgreSQL, 1,000,000 supporters (bench/bench_api.py), EXPLAIN ANALYZE at the 500,000th row:
Limit -> Index Scan using ix_supporter_updated_at_id_erased_at, Index Cond: ((updated_at > $1) AND
(ROW(updated_at, id) > ROW($2, $3))), Filter: (erased_at IS NULL); 0.05-0.09 ms whatever the page.
Without the index it was a sort of every match; OFFSET on the rows read and threw away
(page - 1) x 25 of them (630 ms at page 30,000).

total_records and a page whose predecessor's cursor is not known (a client that jumps, or a
cursor expired) are the costs that grow with the table. Counting a million matches took
260-415 ms here (Parallel Seq Scan; the Parallel Index Only Scan of the index, which includes
erased_at, was no faster), and the OFFSET to page 30,000 over the index 800 ms while it read
each row's erased_at from the table, 290 ms as an Index Only Scan (Heap Fetches: 0) now that the
index includes it. Both still read every entry they pass, so for `modified_date gt :since` (a
sync) they come from the rank index instead: every RANK_STEP-th live person's (updated_at, id)
in that order, the total and the last key, read in one pass by a job (build_ranks) and kept in
Redis (and in each process). Then

    rank(since) = j * step + COUNT(live, key > keys[j-1], updated_at <= since)   (< 2 steps)
    total_records = total - rank(since) + COUNT(live, key > last)                (changed since the build)
    page p starts at rank(since) + (p - 1) * per_page: from keys[k - 1], OFFSET < one step

each an Index Only Scan of at most a few thousand entries: 0.06 ms for the first (Limit ->
Index Only Scan, Heap Fetches: 0; without the LIMIT PostgreSQL planned a Gather of two workers
for it, 15 ms), 1.5 ms for 2,000 people changed since the build, 0.3 ms for the cold page's
first key and rows. A person changed since the build is counted twice until the next one
(seconds later: it is rebuilt in the background once API_COUNT_CACHE_SECONDS old). Other
filters (email_address, lt, eq, several clauses) count and skip over the index as before.

total_records is then cached per filter: fresh for API_COUNT_CACHE_SECONDS, then answered
stale while a job counts again, so a client paging through a sync sees one total. `next` never
depends on it (each page reads one row more than it shows).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from redis import RedisError
from sqlalchemy import Select, func, literal, select, text, tuple_

from api.filters import Clause
from crm.extensions import db
from crm.models import Supporter
from crm.redis_conn import get_redis

log = logging.getLogger(__name__)

CURSOR_SECONDS = 3600
STALE_FACTOR = 10  # a stale count is answered (while a job recounts) up to this many lifetimes
RANKS_KEY = "crm:api:people:ranks"
RANK_STEP = 1000  # people between two keys of the rank index (at least)
RANK_KEYS_MAX = 5000  # keys in the index at most (so the step grows past 5,000,000 people)
RANK_KEY_MAX = 2**63
CHANGED_MAX = 100_000  # people changed since the rank index was built past which it is not used
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_lock = threading.Lock()
_ranks: dict[str, object] = {}


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def people_select(clauses: list[Clause]) -> Select:
    query = select(Supporter).where(Supporter.erased_at.is_(None))
    for clause in clauses:
        if clause.field == "modified_date":
            column = Supporter.updated_at
            query = query.where({"eq": column == clause.value, "gt": column > clause.value,
                                 "lt": column < clause.value}[clause.op])
        elif clause.field == "email_address":
            query = query.where(Supporter.email == clause.value)
    return query


def _scope(kind: str, filter_text: str, per_page: int) -> str:
    digest = hashlib.sha256(f"{filter_text}\x00{per_page}".encode()).hexdigest()[:32]
    return f"crm:api:{kind}:{digest}"


PEOPLE_FILTERS = ("modified_date", "email_address")


def exact_count(clauses: list[Clause]) -> int:
    ids = people_select(clauses).with_only_columns(Supporter.id).subquery()
    return db.session.scalar(select(func.count()).select_from(ids)) or 0


def count_people(clauses: list[Clause]) -> int:
    """How many people match: from the rank index for `modified_date gt` (a sync's filter), else COUNT(*)."""
    since, ranks = _since(clauses), None
    if since is not None:
        ranks = current_ranks()
    if ranks is None or not ranks.covers(since):
        return exact_count(clauses)
    # The people changed since the index was built sit after its last key (their updated_at is newer).
    changed = _bounded_count(_live_keys().where(_pair() > _bound(ranks.last)), CHANGED_MAX)
    before = rank_before(ranks, since)
    if changed is None or before is None:  # too much changed since the build: count (and rebuild soon)
        return exact_count(clauses)
    return max(0, ranks.total - before + changed)


def _bounded_count(query: Select, limit: int) -> int | None:
    """COUNT of `query`'s rows, or None if there are `limit` or more.

    The LIMIT is also what keeps PostgreSQL from a parallel plan here: it cannot estimate a row
    comparison's range and planned a Gather of two workers for a few hundred index entries
    (15 ms, nearly all of it starting the workers, against 0.1 ms without)."""
    found = db.session.scalar(select(func.count()).select_from(query.limit(limit).subquery())) or 0
    return None if found >= limit else found


# ---- the rank index -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Ranks:
    """Every `step`th live person's (updated_at, id) in that order, their total and the last key, when built.

    keys[j] is the key of the person at rank (j + 1) * step (1-based); keys are (microseconds
    since the epoch, id), so they compare as the index orders them."""

    built: float
    step: int
    total: int
    keys: list[tuple[int, int]]
    last: tuple[int, int]

    def covers(self, since: datetime) -> bool:
        return bool(self.keys) and _micros(since) < self.last[0]


def _micros(value: datetime) -> int:
    return (_aware(value) - EPOCH) // timedelta(microseconds=1)


def _from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def _pair():
    return tuple_(Supporter.updated_at, Supporter.id)


def _bound(key: tuple[int, int]):
    return tuple_(literal(_from_micros(key[0]), Supporter.updated_at.type), literal(key[1]))


def _live_keys() -> Select:
    return select(Supporter.updated_at, Supporter.id).where(Supporter.erased_at.is_(None))


def _since(clauses: list[Clause]) -> datetime | None:
    """The `since` of a filter that is exactly `modified_date gt since`, else None."""
    if len(clauses) == 1 and clauses[0].field == "modified_date" and clauses[0].op == "gt":
        return clauses[0].value
    return None


def rank_before(ranks: Ranks, since: datetime) -> int | None:
    """How many live people have updated_at <= since: whole steps from the index, the rest counted.

    The count starts at the last indexed key at or before `since`, so it reads at most about one
    step of the (updated_at, id) index (an index-only range scan). None if that range holds
    more than it could have (only an updated_at set into the past would do it)."""
    j = bisect.bisect_right(ranks.keys, (_micros(since), RANK_KEY_MAX))
    near = _live_keys().where(Supporter.updated_at <= since)
    if j:
        near = near.where(_pair() > _bound(ranks.keys[j - 1]))
    counted = _bounded_count(near, 2 * ranks.step + 1)
    return None if counted is None else j * ranks.step + counted


def build_ranks() -> Ranks:
    """Read the rank index from the database (one pass over the (updated_at, id) index) and store it in Redis."""
    order = (Supporter.updated_at, Supporter.id)
    bind = db.session.get_bind()
    if bind.dialect.name == "postgresql":  # every figure below from one snapshot
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    estimate = exact_count([]) if bind.dialect.name == "sqlite" else int(db.session.scalar(text(
        "SELECT reltuples FROM pg_class WHERE relname = 'supporter'")) or 0)
    step = max(RANK_STEP, -(-estimate // RANK_KEYS_MAX))
    numbered = _live_keys().add_columns(func.row_number().over(order_by=order).label("n")).subquery()
    rows = db.session.execute(select(numbered.c.updated_at, numbered.c.id).where(numbered.c.n % step == 0)
                              .order_by(numbered.c.updated_at, numbered.c.id)).all()
    keys = [(_micros(at), row_id) for at, row_id in rows]
    tail = _live_keys()
    if keys:
        tail = tail.where(_pair() > _bound(keys[-1]))
    total = len(keys) * step + (db.session.scalar(select(func.count()).select_from(tail.subquery())) or 0)
    last_row = db.session.execute(_live_keys().order_by(Supporter.updated_at.desc(), Supporter.id.desc())
                                  .limit(1)).first()
    db.session.rollback()
    last = (_micros(last_row[0]), last_row[1]) if last_row else (0, 0)
    ranks = Ranks(built=time.time(), step=step, total=total, keys=keys, last=last)
    seconds = max(1, int(current_app.config["API_COUNT_CACHE_SECONDS"]))
    keep = max(seconds * STALE_FACTOR, CURSOR_SECONDS)  # an old index still spares a count (CHANGED_MAX)
    pipe = get_redis().pipeline(transaction=False)
    pipe.set(RANKS_KEY, json.dumps({"built": ranks.built, "step": step, "total": total, "keys": keys, "last": last}),
             ex=keep)
    pipe.set(f"{RANKS_KEY}:built", repr(ranks.built), ex=keep)
    pipe.set(f"{RANKS_KEY}:fresh", 1, ex=seconds)
    pipe.delete(f"{RANKS_KEY}:rebuild")
    pipe.execute()
    with _lock:
        _ranks.clear()
        _ranks["ranks"] = ranks
    return ranks


def current_ranks() -> Ranks | None:
    """The rank index if one was built in the last hour (each process keeps a copy).

    Past one lifetime a job builds it again while this one is still answered; with none at all
    the job is queued and the caller counts for itself meanwhile."""
    try:
        redis = get_redis()
        pipe = redis.pipeline(transaction=False)
        pipe.get(f"{RANKS_KEY}:built")
        pipe.exists(f"{RANKS_KEY}:fresh")
        built, fresh = pipe.execute()
        if not fresh and redis.set(f"{RANKS_KEY}:rebuild", 1, nx=True, ex=120):
            from crm.queues import BUILD_PEOPLE_RANKS, queue

            queue("default").enqueue(BUILD_PEOPLE_RANKS, result_ttl=0)
        if built is None:
            return None
        with _lock:
            held = _ranks.get("ranks")
        if held is not None and repr(held.built) == built.decode():
            return held
        raw = redis.get(RANKS_KEY)
    except RedisError as exc:
        log.warning("API rank index unavailable (%s); counting", type(exc).__name__)
        return None
    if raw is None:
        return None
    data = json.loads(raw)
    ranks = Ranks(built=data["built"], step=data["step"], total=data["total"],
                  keys=[tuple(k) for k in data["keys"]], last=tuple(data["last"]))
    with _lock:
        _ranks["ranks"] = ranks
    return ranks


def _store_count(redis, key: str, total: int) -> None:
    seconds = max(1, int(current_app.config["API_COUNT_CACHE_SECONDS"]))
    pipe = redis.pipeline(transaction=False)
    pipe.set(key, total, ex=seconds * STALE_FACTOR)
    pipe.set(f"{key}:fresh", 1, ex=seconds)
    pipe.delete(f"{key}:recount")
    pipe.execute()


def people_count(clauses: list[Clause], filter_text: str) -> int:
    """COUNT(*) of the people matching, fresh for API_COUNT_CACHE_SECONDS per filter.

    After that the last count is still answered (for up to STALE_FACTOR times as long) while a
    job counts again, so only the first page asked of a filter waits for a count."""
    key = _scope("people:count", filter_text, 0)
    try:
        redis = get_redis()
        pipe = redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.exists(f"{key}:fresh")
        cached, fresh = pipe.execute()
        if cached is not None:
            if not fresh and redis.set(f"{key}:recount", 1, nx=True, ex=60):
                from crm.queues import RECOUNT_PEOPLE, queue

                queue("default").enqueue(RECOUNT_PEOPLE, filter_text, result_ttl=0)
            return int(cached)
    except RedisError as exc:
        log.warning("API count cache unavailable (%s); counting", type(exc).__name__)
        return count_people(clauses)
    total = count_people(clauses)
    try:
        _store_count(redis, key, total)
    except RedisError:
        pass
    return total


def recount_people(filter_text: str) -> int:
    """Count again for a filter whose cached count went stale (the job behind people_count)."""
    from api.filters import parse_filter

    total = count_people(parse_filter(filter_text, PEOPLE_FILTERS))
    _store_count(get_redis(), _scope("people:count", filter_text, 0), total)
    return total


def people_page(clauses: list[Clause], filter_text: str, page: int, per_page: int) -> tuple[list[Supporter], bool]:
    """The `page`th page of people matching `clauses`, and whether another follows.

    By keyset from the previous page's last row when that is known; otherwise the page's first
    key is found by OFFSET over (updated_at, id) only, and the page is read from there. One row
    more than the page is read, so `next` never depends on a count."""
    base = people_select(clauses)
    order = (Supporter.updated_at, Supporter.id)
    scope = _scope("people:cursor", filter_text, per_page)
    cursor = None
    if page > 1:
        try:
            cursor = get_redis().get(f"{scope}:{page - 1}")
        except RedisError:
            cursor = None
    query = base.order_by(*order).limit(per_page + 1)
    pair = tuple_(Supporter.updated_at, Supporter.id)
    if cursor is not None:
        at_text, _, id_text = cursor.decode().partition("|")
        bound = tuple_(literal(datetime.fromisoformat(at_text), Supporter.updated_at.type), literal(int(id_text)))
        query = query.where(pair > bound)
    elif page > 1:
        keys, skip = base.with_only_columns(*order), (page - 1) * per_page
        since = _since(clauses)
        ranks = current_ranks() if since is not None else None
        if ranks is not None and ranks.covers(since):
            # The page's first person has rank `before + skip + 1` among all live people: start
            # from the indexed key at or below that rank, and skip less than one step from it.
            before = rank_before(ranks, since)
            j = min((before + skip) // ranks.step, len(ranks.keys)) if before is not None else 0
            if j and j * ranks.step >= before:
                keys, skip = keys.where(pair > _bound(ranks.keys[j - 1])), before + skip - j * ranks.step
        first = keys.order_by(*order).offset(skip).limit(1).subquery()
        query = query.where(pair >= select(first.c.updated_at, first.c.id).scalar_subquery())
    rows = list(db.session.scalars(query))
    more, rows = len(rows) > per_page, rows[:per_page]
    if rows:
        last = rows[-1]
        try:
            get_redis().set(f"{scope}:{page}", f"{_aware(last.updated_at).isoformat()}|{last.id}", ex=CURSOR_SECONDS)
        except RedisError:
            pass
    return rows, more

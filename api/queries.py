"""The API's collection queries: people by keyset whatever page is asked, counts cached briefly.

People are served in (updated_at, id) order, the order a sync wants ("what changed since").
Clients page with OSDI's page numbers; under the hood each page served leaves its last row's
(updated_at, id) in Redis, keyed by the filter and page size, and the next page seeks from it:

    SELECT ... FROM supporter
    WHERE erased_at IS NULL AND updated_at > :since AND (updated_at, id) > (:last_at, :last_id)
    ORDER BY updated_at, id LIMIT 26

PostgreSQL, 1,000,000 supporters (bench/bench_api.py), EXPLAIN ANALYZE at the 500,000th row:
Limit -> Index Scan using ix_supporter_updated_at_id, Index Cond: ((updated_at > $1) AND
(ROW(updated_at, id) > ROW($2, $3))), Filter: (erased_at IS NULL); 0.05-0.09 ms whatever the page.
Without the index it was a sort of every match; OFFSET on the rows read and threw away
(page - 1) x 25 of them (630 ms at page 30,000). A page whose predecessor's cursor is not known (a client that
jumps, or a cursor expired) finds its first key by OFFSET over the index (120-200 ms to skip
750,000 here, against 630 ms for OFFSET on the rows themselves), then reads the page from it.

total_records is a COUNT of every match, the one cost that grows with the table (a parallel
scan: 170-400 ms for a million rows here). It is cached per filter: fresh for
API_COUNT_CACHE_SECONDS, then answered stale while a job counts again, so a client paging
through a sync waits for it on its first page only. `next` never depends on it (each page
reads one row more than it shows).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from flask import current_app
from redis import RedisError
from sqlalchemy import Select, func, literal, select, tuple_

from api.filters import Clause
from crm.extensions import db
from crm.models import Supporter
from crm.redis_conn import get_redis

log = logging.getLogger(__name__)

CURSOR_SECONDS = 3600
STALE_FACTOR = 10  # a stale count is answered (while a job recounts) up to this many lifetimes


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


def count_people(clauses: list[Clause]) -> int:
    ids = people_select(clauses).with_only_columns(Supporter.id).subquery()
    return db.session.scalar(select(func.count()).select_from(ids)) or 0


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
        first = base.with_only_columns(*order).order_by(*order).offset((page - 1) * per_page).limit(1).subquery()
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

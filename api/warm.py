"""Warm a new web process for the API before its first client.

A process compiles each statement the first time it runs it (SQLAlchemy caches compiled SQL per
process), PostgreSQL loads its catalog for a new connection's first queries, the rate limiter
loads its Lua script into Redis, and the people rank index is read from Redis into the process
(api/queries.py). Together that was 35 ms on a quiet machine and 85-95 ms in a gunicorn worker
under load, paid by the first API request of each worker, over the 50 ms a page may take
(bench/bench_api.py). crm/wsgi.py runs warm_up() as each worker starts, so no client pays it.

The requests it makes read next to nothing: a key that does not exist, the people changed after
2999, and the first pages of everyone since 1970 (26 rows each, the rank index's first step).
"""

from __future__ import annotations

import logging
import time

import limits
from flask import Flask, current_app
from redis import RedisError
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

NOBODY = "modified_date gt '2999-01-01T00:00:00'"
EVERYONE = "modified_date gt '1970-01-01T00:00:00'"


def warm_up(app: Flask) -> float:
    """Run the API's hot paths once; returns the seconds it took. Never raises: a process that
    could not warm up still serves, its first client just waits a little longer."""
    started = time.perf_counter()
    try:
        with app.test_request_context("/api/v1/people"):
            _people()
    except (SQLAlchemyError, RedisError, OSError) as exc:  # the session goes with the context
        log.warning("API warm-up skipped (%s)", type(exc).__name__)
    return time.perf_counter() - started


def _people() -> None:
    from api import keys, queries, resources
    from api.filters import parse_filter
    from crm.ratelimit import rate_limiter

    keys.find_active("crm-warm-up-no-such-key")
    rate_limiter().get_window_stats(limits.parse(current_app.config["API_RATE_LIMIT"]), "api", "warm-up")
    per_page = int(current_app.config["API_MAX_PER_PAGE"])  # the default page size
    # A page past the index's first step: the cold path that starts from an indexed key.
    deep = queries.RANK_STEP // per_page + 2
    for text in (NOBODY, EVERYONE):
        clauses = parse_filter(text, queries.PEOPLE_FILTERS)
        rows, _ = queries.people_page(clauses, text, 1, per_page)
        queries.people_page(clauses, text, 2, per_page)  # seeks from page 1's cursor
        queries.people_page(clauses, text, deep, per_page)  # no cursor: found from the rank index
        if text == NOBODY or queries.current_ranks() is not None:
            queries.people_count(clauses, text)  # with no rank index, everyone is a full count: skipped
        for person in rows:
            resources.person(person)

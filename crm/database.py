"""Database binding: SQLite pragmas (WAL, foreign keys), pool pings and the SQLAlchemy extension."""

import hashlib
import time

from flask import Flask
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Engine

from crm.extensions import db
from crm.logs import ENGINE_DEFAULTS


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a worker writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
    # The suppression list holds SHA-256 hex digests; PostgreSQL has sha256(), SQLite gets ours.
    dbapi_connection.create_function("crm_sha256_hex", 1, _sha256_hex, deterministic=True)


def _sha256_hex(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()


def plan_for_these_values() -> None:
    """Have PostgreSQL plan the rest of this transaction's statements for the values they carry.

    psycopg prepares a statement on its 6th run on a connection, and from about the 11th
    PostgreSQL may settle on a generic plan, made without the values. Where the values decide
    the plan that is slow: a supporter search page for a rare term, planned generically, walks
    the primary key backwards filtering a million rows (165 ms, EXPLAIN ANALYZE, 1M supporters)
    instead of reading the trigram index (6 ms); a segment count loses its row estimates (0.56 s
    against 0.41 s). Planning each run costs about a millisecond. SQLite plans every statement.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


# A pooled connection that sat unused this long is pinged before it is handed out: a database
# restart, or a proxy or firewall dropping idle connections, may have closed it meanwhile.
# SQLAlchemy's pool_pre_ping pings on every checkout instead: a round trip per request, about
# 0.1 ms of web and database CPU, for a connection that was working a moment ago. A server
# that goes away under steady traffic fails the requests in flight either way, and perhaps one
# more per process that a ping would have saved: on that first disconnect error the pool drops
# every connection it holds.
POOL_PING_AFTER_IDLE_SECONDS = 10.0


def _mark_idle(_dbapi_connection, record) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(engine: Engine):
    def ping(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < POOL_PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.DisconnectionError() from error  # the pool connects afresh and retries
            raise
    return ping


def init_database(app: Flask) -> None:
    # hide_parameters: a failed statement's message never holds its values (crm.logs says why).
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {**ENGINE_DEFAULTS, **app.config["SQLALCHEMY_ENGINE_OPTIONS"]}
    db.init_app(app)
    with app.app_context():
        engine: Engine = db.engine
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        if not app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_pre_ping"):
            event.listen(engine.pool, "checkin", _mark_idle)
            event.listen(engine.pool, "checkout", _ping_if_idle(engine))


def is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def upsert_insert(dialect: str):
    """The dialect's INSERT construct, the one with ON CONFLICT (PostgreSQL's, else SQLite's)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return pg_insert if dialect == "postgresql" else sqlite_insert


def commit_retrying_once(work):
    """Run `work()` and commit; after a unique-constraint race, roll back and run it once more.

    A concurrent twin (the same new address at the same moment) makes our INSERT fail; by the
    second attempt its row is visible, so `work` finds it instead of inserting. Never a 500."""
    for attempt in (1, 2):
        try:
            result = work()
            db.session.commit()
            return result
        except exc.IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


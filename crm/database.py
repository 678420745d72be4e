"""Database binding: SQLite pragmas (WAL, foreign keys) and the SQLAlchemy extension."""

import hashlib

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from crm.extensions import db


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


def init_database(app: Flask) -> None:
    db.init_app(app)
    with app.app_context():
        engine: Engine = db.engine
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)


def is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"

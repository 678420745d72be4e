"""The PostgreSQL databases the benchmarks build for themselves: made, rebuilt and dropped by name."""

from __future__ import annotations

import shutil

RESERVED = ("test", "postgres")  # the test suite's and the server's own: never a bench's


def _admin(url: str):
    import psycopg

    base, _, name = url.rpartition("/")
    if name in RESERVED:
        raise SystemExit(f"{url}: a benchmark needs a database of its own, not {name!r}")
    # Autocommit: CREATE and DROP DATABASE cannot run inside a transaction.
    return psycopg.connect(f"{base}/postgres", autocommit=True), name


def ensure_database(url: str) -> None:
    """CREATE DATABASE if it is missing."""
    from psycopg import sql

    conn, name = _admin(url)
    with conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(url: str) -> None:
    from psycopg import sql

    conn, name = _admin(url)
    with conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def fresh_database(url: str) -> None:
    """An empty database under that name, whatever was there."""
    drop_database(url)
    ensure_database(url)


def release(app, url: str, instance: str, keep: bool) -> None:
    """After a run: close the app's connections, drop the database unless kept, remove the instance folder."""
    from crm.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if not keep:
        drop_database(url)
    shutil.rmtree(instance, ignore_errors=True)

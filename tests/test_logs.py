"""No supporter's data reaches the log when the database fails: not from SQLAlchemy, not from PostgreSQL."""

import logging

import pytest
from sqlalchemy import insert

from crm.auth.permissions import public
from crm.extensions import db
from crm.logs import safe_traceback
from crm.models import ConsentEvent, Supporter

EMAIL, IP, AGENT = "ada.secret@example.net", "203.0.113.77", "SecretAgent/7.0 (walks through logs)"


@pytest.fixture
def failing_app(make_app):
    """An app as in production (errors are answered 500 and logged, not raised to the test), with a
    route that fails in the database on a duplicate address, a consent event's IP and user agent bound."""
    app = make_app(TESTING=False, PROPAGATE_EXCEPTIONS=False)

    @app.route("/test-only/duplicate", methods=["POST"])
    @public
    def duplicate():
        for _ in range(2):
            supporter_id = db.session.execute(insert(Supporter).values(
                email=EMAIL, email_status="subscribed").returning(Supporter.id)).scalar()
            db.session.execute(insert(ConsentEvent).values(
                supporter_id=supporter_id, action="opt_in", source="test", ip=IP, user_agent=AGENT))
        return "unreachable"

    with app.app_context():
        yield app


def test_a_500_logs_the_failure_without_the_data(failing_app, caplog):
    """The unique violation is logged with its statement, class and constraint; no address, IP or agent."""
    with caplog.at_level(logging.ERROR):
        response = failing_app.test_client().post("/test-only/duplicate", environ_base={"REMOTE_ADDR": IP},
                                                  headers={"User-Agent": AGENT})
    assert response.status_code == 500 and "Something went wrong" in response.text
    logged = caplog.text
    assert "IntegrityError" in logged and "INSERT INTO supporter" in logged and "Traceback" in logged
    for secret in (EMAIL, "ada.secret", IP, AGENT):
        assert secret not in logged
    if db.engine.dialect.name == "postgresql":
        assert "SQLSTATE 23505" in logged and "constraint" in logged  # what it was, without what it held


def test_a_failed_request_logs_its_path_without_the_token(failing_app, caplog):
    """A capability link's token (it acts for a supporter without a login) never reaches the log."""
    @failing_app.route("/test-only/t/<token>")
    @public
    def fails_with_a_token(token):
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        assert failing_app.test_client().get("/test-only/t/SeCrEtToKeN123").status_code == 500
    assert "Exception on /test-only/t/… [GET]" in caplog.text and "SeCrEtToKeN123" not in caplog.text


def test_an_error_passed_as_an_argument_is_made_safe_too(failing_app, caplog):
    """log.warning("...: %s", exc) with a database error prints the safe message, not the driver's."""
    try:
        failing_app.view_functions["duplicate"]()
    except Exception as exc:  # noqa: BLE001 (the point is to log it)
        db.session.rollback()
        with caplog.at_level(logging.WARNING):
            logging.getLogger("crm.somewhere").warning("could not save: %s", exc)
            logging.getLogger("rq.worker").exception("job failed")
    assert "could not save: (" in caplog.text and "job failed" in caplog.text
    assert EMAIL not in caplog.text and IP not in caplog.text and AGENT not in caplog.text


def test_other_errors_keep_their_traceback():
    """An error that is not the database's reads as Python would print it, chain and all."""
    try:
        try:
            raise KeyError("first")
        except KeyError as first:
            raise ValueError("second") from first
    except ValueError as exc:
        text = safe_traceback(exc)
    assert text.index("KeyError: 'first'") < text.index("direct cause") < text.index("ValueError: second")
    assert text.count("Traceback (most recent call last):") == 2


def duplicate_supporter_job() -> None:
    """A job that fails in the database on a duplicate address (run by a real worker below)."""
    from workers import job_app

    with job_app().app_context():
        for _ in range(2):
            db.session.execute(insert(Supporter).values(email=EMAIL, email_status="subscribed"))
        db.session.commit()


def test_a_failed_job_keeps_and_logs_no_data(app, caplog):
    """A job failing on the database: the worker's log line and the traceback stored with the job's
    result name the error but not the address PostgreSQL's DETAIL (or the bound parameters) quote."""
    from crm.queues import queue
    from tests.factories import drain

    job = queue("default").enqueue(duplicate_supporter_job)
    with caplog.at_level(logging.ERROR):
        drain(app)
    job.refresh()
    stored = job.latest_result().exc_string
    assert job.get_status() == "failed"
    assert "IntegrityError" in stored and "duplicate_supporter_job" in stored
    assert EMAIL not in stored
    assert "IntegrityError" in caplog.text and EMAIL not in caplog.text


FILTER_QUERY = "filter=email_address%20eq%20%27ada.secret%40example.net%27&page=2&q=ada.secret@example.net"


def dev_server_log(app, caplog, paths: list[str]) -> list[str]:
    """GET each path from a real Werkzeug server (what `crm dev` runs); the request lines it logged."""
    import http.client
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            for path in paths:
                conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
    finally:
        server.shutdown()
        thread.join()
    return [r.getMessage() for r in caplog.records if r.name == "werkzeug"]


def test_the_dev_servers_request_log_withholds_query_values(app, caplog):
    """Werkzeug's request line (`crm dev`) keeps the path and parameter names, never an address in the query."""


    lines = dev_server_log(app, caplog, [f"/healthz?{FILTER_QUERY}"])
    assert any("/healthz?filter=…&page=2&q=…" in line for line in lines), lines
    assert not any("ada.secret" in line or "%40" in line for line in lines)


def test_gunicorns_access_log_withholds_query_values_in_the_request_line_and_referer():
    """gunicorn's access log (its own format atoms: request line, query, referer) holds no address."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from crm.logs import install_record_factory

    install_record_factory()
    config = Config()
    config.set("accesslog", "/dev/null")
    config.set("access_log_format", '%(h)s "%(r)s" %(s)s q=%(q)s "%(f)s" %({raw_uri}e)s')
    written: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: written.append(record.getMessage())
    logger = Logger(config)
    logger.access_log.addHandler(handler)
    try:
        environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/api/v1/people?{FILTER_QUERY}", "SERVER_PROTOCOL": "HTTP/1.1",
                   "QUERY_STRING": FILTER_QUERY, "PATH_INFO": "/api/v1/people", "REMOTE_ADDR": "127.0.0.1",
                   "HTTP_REFERER": "https://crm.example.org/supporters?q=ada.secret%40example.net"}
        response = SimpleNamespace(status="200 OK", sent=10, headers=[])
        logger.access(response, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=3))
    finally:
        logger.access_log.removeHandler(handler)
    assert len(written) == 1 and "/api/v1/people?filter=…&page=2&q=…" in written[0], written
    assert "ada.secret" not in written[0] and "%40" not in written[0]


def test_public_paths_tokens_are_withheld_from_request_lines(app, caplog):
    """An unsubscribe, preference, confirmation or tracking token is a capability: the request log
    shows the path with the token withheld (the dev server's log here; gunicorn's goes through the
    same record factory), and paths that merely contain such a segment are left alone."""


    from campaigns.tokens import make_unsubscribe_token
    from crm.logs import redact_request_line

    token = make_unsubscribe_token(4242)
    lines = dev_server_log(app, caplog, [f"/u/{token}", f"/preferences/{token}", f"/confirm/{token}",
                                         f"/o/{token}", f"/c/{token}/1"])
    assert len(lines) == 5 and not any(token in line for line in lines), lines
    assert any("GET /u/… HTTP" in line for line in lines) and any("GET /c/…/1 HTTP" in line for line in lines)
    assert redact_request_line(f"https://crm.example.org/preferences/{token}?a=b") == (
        "https://crm.example.org/preferences/…?a=…")
    assert redact_request_line("GET /campaigns/3/c/5 HTTP/1.1") == "GET /campaigns/3/c/5 HTTP/1.1"
    assert redact_request_line("GET /petitions/u HTTP/1.1") == "GET /petitions/u HTTP/1.1"

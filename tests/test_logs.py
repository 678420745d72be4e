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

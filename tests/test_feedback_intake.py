"""The webhook intake: requests queue what they accepted in feedback_intake, a worker applies it with
apply_feedback() in batches, and every event is applied exactly once whatever retries or crashes."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from crm.extensions import db
from crm.models import ConsentEvent, FeedbackEvent, FeedbackIntake, Message, Supporter
from crm.redis_conn import get_redis
from feedback import intake
from tests import factories
from tests import test_feedback_hooks as hooks
from tests.factories import drain
from tests.feedback_fixtures import sent_message, ses_bounce, sns_notification
from tests.test_feedback_hooks import count, post_sendgrid, post_sns, sendgrid_event

# The webhook tests' fixtures: providers enabled with keys made for the test, an SNS certificate server.
sns, hooks_app, client = hooks.sns, hooks.hooks_app, hooks.client


def test_the_request_queues_and_a_worker_applies(client, hooks_app, sns):
    """A bounce is queued by the request (nothing applied yet), the job it enqueued applies it."""
    person = factories.make_supporter()
    message = sent_message(person)
    response = post_sns(client, sns.sign(sns_notification(ses_bounce(message, person.email))))
    assert response.status_code == 200 and response.json["queued"] == 1
    db.session.expire_all()
    assert person.email_status == "subscribed" and count(FeedbackIntake) == 1
    assert get_redis().exists(intake.KICK_KEY)  # the job is queued: the next request enqueues no other
    drain(hooks_app)
    assert person.email_status == "bouncing" and count(FeedbackIntake) == 0
    assert not get_redis().exists(intake.KICK_KEY)


def test_a_retried_notification_is_applied_once(client, hooks_app, sns):
    """The same notification while the first waits, and again after it was applied: one event, one change."""
    person = factories.make_supporter()
    message = sent_message(person)
    doc = sns.sign(sns_notification(ses_bounce(message, person.email)))
    assert post_sns(client, doc).json["queued"] == 1
    waiting = post_sns(client, doc)
    assert (waiting.json["queued"], waiting.json["duplicates"]) == (0, 1)
    assert count(FeedbackIntake) == 1
    drain(hooks_app)
    applied = post_sns(client, doc)
    assert (applied.json["queued"], applied.json["duplicates"]) == (0, 1)
    drain(hooks_app)
    assert count(FeedbackEvent) == 1 and count(FeedbackIntake) == 0
    assert count(ConsentEvent, ConsentEvent.supporter_id == person.id, ConsentEvent.action == "bounce") == 1


def test_every_event_of_overlapping_batches_is_applied_exactly_once(client, hooks_app):
    """Batches that repeat each other's events, and an event twice in one batch: each fact counted once,
    deliveries stamped once (as the bench counts them)."""
    people = [factories.make_supporter() for _ in range(12)]
    messages = [sent_message(p) for p in people]
    events = ([sendgrid_event(m, "delivered") for m in messages[:6]]
              + [sendgrid_event(m, "bounce", status="5.1.1", type="bounce", reason="550 5.1.1 no")
                 for m in messages[6:9]]
              + [sendgrid_event(m, "spamreport") for m in messages[9:]])
    first = post_sendgrid(client, hooks_app, events[:9] + events[8:9])
    assert (first.json["received"], first.json["queued"], first.json["duplicates"]) == (10, 3, 1)
    second = post_sendgrid(client, hooks_app, events[3:])
    assert (second.json["queued"], second.json["duplicates"]) == (3, 3)
    drain(hooks_app)
    assert post_sendgrid(client, hooks_app, events).json["queued"] == 0
    drain(hooks_app)
    assert count(Message, Message.delivered_at.is_not(None)) == 6
    assert count(FeedbackEvent, FeedbackEvent.kind == "bounce") == 3
    assert count(FeedbackEvent, FeedbackEvent.kind == "complaint") == 3
    assert count(Supporter, Supporter.email_status == "bouncing") == 3
    assert count(Supporter, Supporter.email_status == "complained") == 3
    assert count(ConsentEvent, ConsentEvent.source.like("bounce:%") | ConsentEvent.source.like("complaint:%")) == 6
    assert count(FeedbackIntake) == 0


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the worker catches it."""


def test_a_worker_killed_mid_batch_leaves_the_rest_and_doubles_nothing(client, hooks_app, monkeypatch):
    """Killed after applying some rows of a batch: its transaction rolls back, every row waits again, and the
    next run applies each one once."""
    people = [factories.make_supporter() for _ in range(8)]
    messages = [sent_message(p) for p in people]
    post_sendgrid(client, hooks_app, [sendgrid_event(m, "spamreport") for m in messages])
    get_redis().flushdb()  # no queued job: this test runs the worker's function by hand
    applied = []
    real = intake.apply_feedback

    def dies_after_three(fb, **kwargs):
        if len(applied) == 3:
            raise Killed
        applied.append(fb.event_id)
        return real(fb, **kwargs)

    monkeypatch.setattr(intake, "apply_feedback", dies_after_three)
    with pytest.raises(Killed):
        intake.apply_waiting()
    db.session.rollback()  # the dead worker's connection goes, and its transaction with it
    db.session.expire_all()
    assert len(applied) == 3
    assert count(FeedbackIntake) == 8 and count(FeedbackEvent) == 0
    assert count(Supporter, Supporter.email_status == "complained") == 0

    monkeypatch.setattr(intake, "apply_feedback", real)
    result = intake.apply_waiting()
    assert (result.claimed, result.outcomes) == (8, {"applied": 8})
    assert intake.apply_waiting().claimed == 0
    db.session.expire_all()
    assert count(FeedbackIntake) == 0 and count(FeedbackEvent) == 8
    assert count(Supporter, Supporter.email_status == "complained") == 8
    assert count(ConsentEvent, ConsentEvent.action == "complaint") == 8


def test_a_row_that_fails_alone_is_set_aside_and_the_rest_applied(client, hooks_app, monkeypatch):
    """One event that breaks the service: the batch is retried a row at a time, that row kept with its error
    (counted for the list-health page), the others applied."""
    people = [factories.make_supporter() for _ in range(4)]
    messages = [sent_message(p) for p in people]
    post_sendgrid(client, hooks_app, [sendgrid_event(m, "spamreport") for m in messages])
    get_redis().flushdb()
    bad = f"sg_spamreport_{messages[1].id}"
    real = intake.apply_feedback

    def breaks_on_one(fb, **kwargs):
        if fb.event_id == bad:
            raise ValueError("a bug meets an odd payload")
        return real(fb, **kwargs)

    monkeypatch.setattr(intake, "apply_feedback", breaks_on_one)
    result = intake.apply_waiting()
    assert (result.claimed, result.failed) == (3, 1)
    assert intake.backlog() == (0, 1)
    kept = db.session.scalars(select(FeedbackIntake)).one()
    assert (kept.event_id, kept.error) == (bad, "ValueError") and kept.failed_at is not None
    db.session.expire_all()
    assert [p.email_status for p in people] == ["complained", "subscribed", "complained", "complained"]


def test_two_workers_take_different_rows(client, hooks_app):
    """PostgreSQL: rows another worker holds (FOR UPDATE) are skipped, not waited for, and applied after."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite has one writer at a time")
    people = [factories.make_supporter() for _ in range(4)]
    messages = [sent_message(p) for p in people]
    post_sendgrid(client, hooks_app, [sendgrid_event(m, "spamreport") for m in messages])
    with db.engine.connect() as other:
        held = other.execute(text("SELECT id FROM feedback_intake ORDER BY id LIMIT 2 FOR UPDATE")).scalars().all()
        assert intake.apply_waiting().claimed == 2
        assert set(db.session.scalars(select(FeedbackIntake.id))) == set(held)
        other.rollback()
    assert intake.apply_waiting().claimed == 2
    assert count(FeedbackEvent) == 4 and count(FeedbackIntake) == 0

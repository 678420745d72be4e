"""Relays' delivery receipts go to a Redis stream in the request and are stamped by the workers in
batches, once, whatever dies when; with Redis away the request stamps them itself. And the intake is
applied complaints first, then hard bounces, then the rest."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from crm.extensions import db
from crm.models import FeedbackIntake, Message, Supporter
from crm.redis_conn import get_redis
from feedback import deliveries, intake
from tests import factories
from tests import test_feedback_hooks as hooks
from tests.factories import drain
from tests.feedback_fixtures import sent_message
from tests.test_feedback_hooks import count, post_sendgrid, sendgrid_event

sns, hooks_app, client = hooks.sns, hooks.hooks_app, hooks.client


def delivered(messages) -> list:
    db.session.expire_all()
    return [db.session.get(Message, m.id).delivered_at for m in messages]


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the worker catches it."""


def test_a_delivery_goes_to_the_stream_and_is_stamped_once(client, hooks_app):
    """The request writes nothing to the message; the flush stamps it; a second flush and a retried
    receipt change nothing."""
    messages = [sent_message() for _ in range(3)]
    events = [sendgrid_event(m, "delivered", response="250 OK") for m in messages]
    assert post_sendgrid(client, hooks_app, events).status_code == 200
    assert delivered(messages) == [None, None, None]
    assert deliveries.waiting() == 3
    get_redis().delete(intake.KICK_KEY)  # this test flushes by hand
    result = deliveries.flush()
    assert (result.read, result.stamped) == (3, 3) and deliveries.waiting() == 0
    first = delivered(messages)
    assert all(first)
    assert deliveries.flush().read == 0
    post_sendgrid(client, hooks_app, [dict(e, timestamp=e["timestamp"] + 60) for e in events])
    assert deliveries.flush().stamped == 0
    assert delivered(messages) == first


def test_the_kick_job_flushes_the_deliveries(client, hooks_app):
    """A request that only reports deliveries still has a worker stamp them within a second."""
    message = sent_message()
    post_sendgrid(client, hooks_app, [sendgrid_event(message, "delivered")])
    drain(hooks_app)
    assert delivered([message])[0] is not None and deliveries.waiting() == 0


def test_a_flush_dying_after_its_commit_writes_nothing_twice(client, hooks_app, monkeypatch):
    """Killed between the commit and the XACK: another worker claims the entries and stamps nothing again."""
    messages = [sent_message() for _ in range(4)]
    post_sendgrid(client, hooks_app, [sendgrid_event(m, "delivered") for m in messages])
    get_redis().delete(intake.KICK_KEY)
    real = deliveries.write_batch

    def commits_then_dies(entries, result):
        real(entries, result)
        raise Killed

    monkeypatch.setattr(deliveries, "write_batch", commits_then_dies)
    with pytest.raises(Killed):
        deliveries.flush(consumer="dead-worker")
    monkeypatch.setattr(deliveries, "write_batch", real)
    first = delivered(messages)
    assert all(first)
    result = deliveries.flush(consumer="other-worker", claim_idle_seconds=0)
    assert (result.read, result.stamped) == (4, 0)
    assert delivered(messages) == first and deliveries.waiting() == 0


def test_a_flush_dying_before_its_commit_leaves_them_for_the_next(client, hooks_app, monkeypatch):
    """Killed before the commit: nothing stamped; another worker claims the entries and stamps each once."""
    messages = [sent_message() for _ in range(4)]
    post_sendgrid(client, hooks_app, [sendgrid_event(m, "delivered") for m in messages])
    get_redis().delete(intake.KICK_KEY)

    def dies(entries, result):
        raise Killed

    monkeypatch.setattr(deliveries, "write_batch", dies)
    with pytest.raises(Killed):
        deliveries.flush(consumer="dead-worker")
    monkeypatch.undo()
    db.session.rollback()
    assert delivered(messages) == [None] * 4
    assert deliveries.flush(consumer="other-worker", claim_idle_seconds=3600).read == 0  # not idle long enough
    result = deliveries.flush(consumer="other-worker", claim_idle_seconds=0)
    assert (result.read, result.stamped) == (4, 4)
    assert all(delivered(messages))


def test_redis_down_the_request_stamps_the_delivery_itself(client, hooks_app, monkeypatch):
    """No stream to write to: the delivery is stamped in the request, and the relay still gets its 200."""
    message = sent_message()

    def refuses(redis, keys):
        raise RedisConnectionError("Redis is away")

    monkeypatch.setattr(intake, "record_to_stream", refuses)
    response = post_sendgrid(client, hooks_app, [sendgrid_event(message, "delivered")])
    assert response.status_code == 200
    assert delivered([message])[0] is not None and deliveries.waiting() == 0


def test_a_complaint_behind_many_bounces_is_applied_in_the_first_batch(client, hooks_app):
    """The worker takes complaints first, then hard bounces, then the rest, whatever arrived first."""
    campaign = factories.make_campaign(status="sent")
    people = [factories.make_supporter() for _ in range(31)]
    messages = [sent_message(p, campaign) for p in people]
    soft = [sendgrid_event(m, "bounce", status="4.2.2", type="blocked", reason="mailbox full") for m in messages[:15]]
    hard = [sendgrid_event(m, "bounce", status="5.1.1", type="bounce", reason="550 5.1.1 no") for m in messages[15:30]]
    post_sendgrid(client, hooks_app, soft)
    post_sendgrid(client, hooks_app, hard)
    post_sendgrid(client, hooks_app, [sendgrid_event(messages[30], "spamreport")])
    get_redis().delete(intake.KICK_KEY)  # no job: the batches are run by hand
    assert count(FeedbackIntake) == 31
    intake.apply_waiting(batch=10, max_batches=1)
    db.session.expire_all()
    assert people[30].email_status == "complained"
    assert count(Supporter, Supporter.email_status == "bouncing") == 9  # the oldest hard bounces came next
    assert count(FeedbackIntake, FeedbackIntake.kind == "bounce", FeedbackIntake.hard.is_(False)) == 15
    intake.apply_waiting(batch=10, max_batches=1)
    assert count(FeedbackIntake, FeedbackIntake.hard.is_(True)) == 0
    assert count(FeedbackIntake) == 11  # the last six hard bounces, then the four oldest soft ones


def test_the_periodic_task_flushes_the_deliveries(client, hooks_app):
    """Without the kick job (lost, or Redis away when it was due), a worker's periodic task stamps them."""
    from workers.periodic import PERIODIC, run_due

    message = sent_message()
    post_sendgrid(client, hooks_app, [sendgrid_event(message, "delivered")])
    get_redis().delete(intake.KICK_KEY, "crm:periodic:flush-feedback-deliveries")
    ran = run_due(hooks_app, get_redis(), "test-worker",
                  tuple(t for t in PERIODIC if t.name == "flush-feedback-deliveries"))
    assert ran == ["flush-feedback-deliveries"]
    assert delivered([message])[0] is not None and deliveries.waiting() == 0


def test_deliveries_are_stamped_between_intake_batches(client, hooks_app):
    """A backlog of bounces does not hold the deliveries back: the worker stamps them after each batch."""
    messages = [sent_message() for _ in range(4)]
    post_sendgrid(client, hooks_app, [sendgrid_event(m, "bounce", status="5.1.1", type="bounce", reason="550 no")
                                      for m in messages[:3]] + [sendgrid_event(messages[3], "delivered")])
    get_redis().delete(intake.KICK_KEY)
    result = intake.apply_waiting(batch=1, max_batches=1, between=intake.between_batches)
    assert result.claimed == 1 and result.more
    assert delivered([messages[3]])[0] is not None and deliveries.waiting() == 0

"""The send loop and feedback: "user unknown" goes through the one feedback service, VERP return
paths name each message, and a complained address is absent from the next campaign's snapshot."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from campaigns import lifecycle
from crm.extensions import db
from crm.models import FeedbackEvent, Message
from crm.supporters import suppression
from feedback.apply import apply_feedback
from feedback.types import Feedback
from tests.factories import drain
from tests.test_pipeline import campaign_to, segment, supporters


@pytest.fixture
def smtp(smtp_server):
    return smtp_server


@pytest.fixture
def send_app(make_app, smtp_server):
    app = make_app(SMTP_URL=smtp_server.url, SEND_RATE_PER_SECOND=1000)
    with app.app_context():
        yield app


def test_user_unknown_at_send_time_is_a_hard_bounce_through_the_service(send_app, smtp):
    """550 5.1.1 from the relay: a feedback_event from `smtp`, the address suppressed, source bounce:smtp."""
    ok, unknown = supporters(2)
    smtp.handler.replies[unknown.email] = ["550 5.1.1 <x@y>: User unknown"]
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)
    event = db.session.scalar(select(FeedbackEvent))
    assert (event.provider, event.kind, event.hard, event.status) == ("smtp", "bounce", True, "5.1.1")
    entry = suppression.entry_for(unknown.email)
    assert (entry.reason, entry.source, entry.campaign_id) == ("bounced", "bounce:smtp", campaign.id)
    assert "x@y" not in event.detail


def test_verp_return_path_per_message(make_app, smtp):
    """BOUNCE_VERP=1: MAIL FROM is bounces+<campaign>.<message>@domain for each message."""
    app = make_app(SMTP_URL=smtp.url, SEND_RATE_PER_SECOND=1000, BOUNCE_ADDRESS="bounces@news.example.org",
                   BOUNCE_VERP="1")
    with app.app_context():
        supporters(3)
        campaign = campaign_to(segment())
        lifecycle.send_now(campaign)
        drain(app)
        messages = {m.email: m.id for m in db.session.scalars(select(Message).where(
            Message.campaign_id == campaign.id))}
        senders = {env.rcpt_tos[0]: env.mail_from for env in smtp.handler.envelopes}
        assert senders == {email: f"bounces+{campaign.id}.{mid}@news.example.org" for email, mid in messages.items()}


def test_a_complained_address_is_absent_from_the_next_snapshot(send_app, smtp):
    """After a complaint on the first campaign, the second one never queues a message for them."""
    stays, complains = supporters(2)
    first = campaign_to(segment())
    lifecycle.send_now(first)
    drain(send_app)
    message = db.session.scalar(select(Message).where(Message.supporter_id == complains.id))
    apply_feedback(Feedback(provider="sendgrid", kind="complaint", event_id="sg-1", address=complains.email,
                            message_ref=f"{first.id}.{message.id}"))
    second = campaign_to(segment())
    lifecycle.send_now(second)
    drain(send_app)
    recipients = set(db.session.scalars(select(Message.supporter_id).where(Message.campaign_id == second.id)))
    assert recipients == {stays.id}

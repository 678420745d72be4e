"""The one feedback service: what a bounce, complaint, unsubscribe or delivery changes, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from crm.extensions import db
from crm.models import (
    Campaign,
    ConsentEvent,
    EngagementEvent,
    FeedbackEvent,
    FeedbackRules,
    Message,
    Suppression,
    utcnow,
)
from crm.supporters import suppression
from feedback.apply import apply_feedback, check_complaint_rate, forget_cached_rules
from feedback.types import Feedback
from tests import factories


@pytest.fixture(autouse=True)
def _fresh_rules():
    forget_cached_rules()
    yield
    forget_cached_rules()


def sent_message(supporter=None, campaign=None, **overrides) -> Message:
    supporter = supporter or factories.make_supporter()
    campaign = campaign or factories.make_campaign(status="sent")
    values = {"status": "sent", "sent_at": utcnow(), "smtp_message_id": None, **overrides}
    message = factories.make_message(campaign, supporter, **values)
    if message.smtp_message_id is None:
        message.smtp_message_id = f"<{message.id}.{campaign.id}.0123456789ab@news.example.org>"
        db.session.commit()
    return message


def ref(message: Message) -> str:
    return f"{message.campaign_id}.{message.id}"


def bounce(message: Message, event_id: str = "evt-1", hard: bool = True, **overrides) -> Feedback:
    values = {"provider": "ses", "kind": "bounce", "event_id": event_id, "address": message.email,
              "message_ref": ref(message), "hard": hard, "status": "5.1.1" if hard else "4.2.2",
              "detail": "smtp; 550 5.1.1 user unknown"}
    return Feedback(**{**values, **overrides})


def events_of(supporter) -> list[tuple[str, str]]:
    return [(e.action, e.source) for e in db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.supporter_id == supporter.id).order_by(ConsentEvent.id))]


def test_hard_bounce_makes_the_address_bouncing_suppressed_and_skips_queued_mail(app):
    """A permanent bounce: consent event bounce:<provider>, message row, suppression, queued mail skipped."""
    person = factories.make_supporter()
    message = sent_message(person)
    later = factories.make_campaign(status="sending")
    queued = factories.make_message(later, person, status="queued")

    result = apply_feedback(bounce(message))

    assert result.outcome == "applied" and result.status_changed
    db.session.expire_all()
    assert person.email_status == "bouncing"
    assert events_of(person)[-1] == ("bounce", "bounce:ses")
    event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.action == "bounce"))
    assert event.campaign_id == message.campaign_id and "5.1.1" in event.reason
    assert (message.bounce_type, message.bounced_at is not None, message.status) == ("hard", True, "sent")
    entry = suppression.entry_for(person.email)
    assert (entry.reason, entry.email, entry.source, entry.campaign_id) == (
        "bounced", person.email, "bounce:ses", message.campaign_id)
    assert db.session.get(Message, queued.id).status == "suppressed"
    kinds = db.session.scalars(select(EngagementEvent.kind).where(EngagementEvent.message_id == message.id)).all()
    assert kinds == ["bounce"]


def test_the_same_notification_twice_changes_nothing_the_second_time(app):
    """Providers retry: the second arrival of one event id is a duplicate and writes nothing."""
    person = factories.make_supporter()
    message = sent_message(person)
    assert apply_feedback(bounce(message)).outcome == "applied"
    before = (db.session.scalar(select(func.count()).select_from(ConsentEvent)),
              db.session.scalar(select(func.count()).select_from(EngagementEvent)))

    again = apply_feedback(bounce(message))

    assert again.outcome == "duplicate"
    assert (db.session.scalar(select(func.count()).select_from(ConsentEvent)),
            db.session.scalar(select(func.count()).select_from(EngagementEvent))) == before
    assert db.session.scalar(select(func.count()).select_from(FeedbackEvent)) == 1


def test_soft_bounces_count_per_address_and_message_until_the_limit(app):
    """3 soft bounces (distinct messages) within 30 days make the address bouncing; repeats of one don't count."""
    person = factories.make_supporter()
    first, second, third = (sent_message(person) for _ in range(3))
    apply_feedback(bounce(first, "s1", hard=False))
    apply_feedback(bounce(first, "s1-again", hard=False))  # the same message deferred twice
    apply_feedback(bounce(second, "s2", hard=False))
    db.session.expire_all()
    assert person.email_status == "subscribed" and not suppression.is_suppressed(person.email)
    assert first.bounce_type == "soft"

    apply_feedback(bounce(third, "s3", hard=False))

    db.session.expire_all()
    assert person.email_status == "bouncing"
    entry = suppression.entry_for(person.email)
    assert entry.reason == "bounced" and "3 soft bounces within 30 days" in entry.detail


def test_soft_bounce_rule_is_configurable_and_old_ones_expire(app):
    """The admin's N-in-D rule applies; soft bounces older than D days are not counted."""
    db.session.add(FeedbackRules(id=1, soft_bounce_limit=2, soft_bounce_days=7))
    db.session.commit()
    person = factories.make_supporter()
    old, new = sent_message(person), sent_message(person)
    apply_feedback(bounce(old, "old", hard=False))
    db.session.execute(FeedbackEvent.__table__.update().values(created_at=utcnow() - timedelta(days=8)))
    db.session.commit()
    apply_feedback(bounce(new, "new", hard=False))
    db.session.expire_all()
    assert person.email_status == "subscribed"
    apply_feedback(bounce(sent_message(person), "newer", hard=False))
    db.session.expire_all()
    assert person.email_status == "bouncing"


def test_complaint_unsubscribes_at_once_and_can_never_be_removed(app):
    """A complaint: complained (even from unsubscribed), suppressed for good, out of the next snapshot."""
    person = factories.make_supporter()
    message = sent_message(person)
    from crm.supporters.consent import record_consent

    record_consent(person, "opt_out", "test")
    db.session.commit()

    result = apply_feedback(Feedback(provider="sendgrid", kind="complaint", event_id="c1",
                                     address=person.email, message_ref=ref(message), detail="abuse"))

    assert result.status_changed
    db.session.expire_all()
    assert person.email_status == "complained"
    assert events_of(person)[-1] == ("complaint", "complaint:sendgrid")
    assert message.complained_at is not None
    entry = suppression.entry_for(person.email)
    assert entry.reason == "complained"
    with pytest.raises(suppression.SuppressionError, match="cannot be removed"):
        suppression.remove_by_staff(entry.id, factories.make_staff("admin").id, "they asked")
    assert suppression.is_suppressed(person.email)


def test_a_report_about_an_address_we_never_mailed_is_recorded_and_ignored(app):
    """No message of ours matches: outcome unmatched, no consent event, no suppression."""
    stranger = factories.make_supporter()
    result = apply_feedback(Feedback(provider="ses", kind="bounce", event_id="x", address=stranger.email,
                                     hard=True))
    assert result.outcome == "unmatched"
    db.session.expire_all()
    assert stranger.email_status == "subscribed" and not suppression.is_suppressed(stranger.email)
    assert db.session.scalar(select(FeedbackEvent.outcome)) == "unmatched"


def test_matching_by_message_id_needs_the_random_part_we_recorded(app):
    """Our Message-ID matches; one with the right ids but another random part does not."""
    person, other = factories.make_supporter(), factories.make_supporter()
    message, decoy = sent_message(person), sent_message(other)
    forged = f"<{decoy.id}.{decoy.campaign_id}.ffffffffffff@news.example.org>"
    assert apply_feedback(Feedback(provider="mailbox", kind="bounce", event_id="f", message_id=forged,
                                   hard=True)).outcome == "unmatched"
    result = apply_feedback(Feedback(provider="mailbox", kind="bounce", event_id="m",
                                     message_id=message.smtp_message_id.strip("<>"), hard=True))
    assert result.outcome == "applied" and result.message_id == message.id
    db.session.expire_all()
    assert (person.email_status, other.email_status) == ("bouncing", "subscribed")


def test_a_ref_from_unauthenticated_mail_needs_the_address_it_went_to(app):
    """The mailbox's X-Message-Ref is guessable, so it only counts with the message's own address."""
    person = factories.make_supporter()
    message = sent_message(person)
    guess = Feedback(provider="mailbox", kind="complaint", event_id="g1", message_ref=ref(message),
                     address="someone-else@example.org", ref_needs_address=True)
    assert apply_feedback(guess).outcome == "unmatched"
    real = Feedback(provider="mailbox", kind="complaint", event_id="g2", message_ref=ref(message),
                    address=person.email, ref_needs_address=True)
    assert apply_feedback(real).outcome == "applied"


def test_address_only_reports_match_the_latest_message_to_that_address(app):
    """A relay that rewrote our headers: the address's most recent message is the one."""
    person = factories.make_supporter()
    sent_message(person, sent_at=utcnow() - timedelta(days=3))
    latest = sent_message(person)
    result = apply_feedback(Feedback(provider="postmark", kind="bounce", event_id="p", address=person.email,
                                     hard=True))
    assert result.message_id == latest.id


def test_a_bounce_for_an_old_address_does_not_touch_the_supporters_new_one(app):
    """The supporter changed address since: the old one is suppressed, the person stays subscribed."""
    person = factories.make_supporter(email="old@example.org")
    message = sent_message(person)
    person.email = "new@example.org"
    db.session.commit()
    apply_feedback(bounce(message, address="old@example.org"))
    db.session.expire_all()
    assert person.email_status == "subscribed"
    assert suppression.is_suppressed("old@example.org") and not suppression.is_suppressed("new@example.org")


def test_a_relay_reported_unsubscribe_opts_out(app):
    """An unsubscribe through the relay's own link is an opt-out with source unsubscribe:<provider>."""
    person = factories.make_supporter()
    message = sent_message(person)
    apply_feedback(Feedback(provider="sendgrid", kind="unsubscribe", event_id="u", address=person.email,
                            message_ref=ref(message)))
    db.session.expire_all()
    assert person.email_status == "unsubscribed"
    assert events_of(person)[-1] == ("opt_out", "unsubscribe:sendgrid")
    assert not suppression.is_suppressed(person.email)


def test_delivery_stamps_the_message_once(app):
    """A delivery changes no status: delivered_at is set once, a repeat is a duplicate."""
    message = sent_message()
    fb = Feedback(provider="ses", kind="delivery", event_id="d", message_ref=ref(message), address=message.email)
    assert apply_feedback(fb).outcome == "delivered"
    assert apply_feedback(fb).outcome == "duplicate"
    db.session.expire_all()
    assert message.delivered_at is not None and message.bounced_at is None


def test_a_bounce_for_a_message_never_sent_is_unmatched(app):
    """A queued or suppressed row never reached anyone: a report about it is not believed."""
    person = factories.make_supporter()
    message = sent_message(person, status="suppressed", sent_at=None)
    assert apply_feedback(bounce(message)).outcome == "unmatched"


def _campaign_with_sent(count: int) -> Campaign:
    campaign = factories.make_campaign(status="sending")
    now = utcnow()
    db.session.execute(insert(Message), [
        {"campaign_id": campaign.id, "supporter_id": None, "email": f"r{i}@example.net", "status": "sent",
         "attempts": 1, "error": "", "created_at": now, "sent_at": now} for i in range(count)])
    db.session.commit()
    return campaign


def test_a_sending_campaign_pauses_when_complaints_pass_0_3_percent_after_1000(app):
    """4 complaints for 1,000 sent (0.4%) pause it; 3 (0.3%, not past it) do not."""
    campaign = _campaign_with_sent(1000)
    people = [factories.make_supporter() for _ in range(4)]
    messages = [sent_message(p, campaign=campaign) for p in people]
    for n, message in enumerate(messages[:3]):
        apply_feedback(Feedback(provider="ses", kind="complaint", event_id=f"c{n}", address=message.email,
                                message_ref=ref(message)))
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).status == "sending"  # 3 of 1,004
    apply_feedback(Feedback(provider="ses", kind="complaint", event_id="c3", address=messages[3].email,
                            message_ref=ref(messages[3])))
    db.session.expire_all()
    paused = db.session.get(Campaign, campaign.id)
    assert paused.status == "paused" and "spam complaints" in paused.status_reason


def test_no_pause_before_the_first_1000_deliveries(app):
    """Complaints on a small start (under 1,000 sent) never pause, however many."""
    campaign = _campaign_with_sent(900)
    for n in range(5):
        message = sent_message(campaign=campaign)
        apply_feedback(Feedback(provider="ses", kind="complaint", event_id=f"k{n}", address=message.email,
                                message_ref=ref(message)))
    assert not check_complaint_rate(campaign.id)
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).status == "sending"


def test_erasing_a_complainer_keeps_the_complaint_by_hash_only(app):
    """Erasure wipes the stored address but the entry stays a complaint, still not removable."""
    from crm.supporters.service import erase_supporter

    person = factories.make_supporter()
    address = person.email
    message = sent_message(person)
    apply_feedback(Feedback(provider="ses", kind="complaint", event_id="e", address=address,
                            message_ref=ref(message)))
    erase_supporter(person, factories.make_staff("admin").id)
    entry = db.session.scalar(select(Suppression))
    assert (entry.email, entry.reason) == (None, "complained")

"""The sending pipeline against a real SMTP server, real Redis and real RQ workers.

Covers the snapshot, delivery, consent re-checks mid-send, SMTP 4xx/5xx outcomes, the error
threshold, pause/resume/cancel, scheduling, and a worker process killed with SIGKILL mid-batch.
"""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaigns import lifecycle, pipeline
from campaigns.tokens import read_unsubscribe_token
from crm.extensions import db
from crm.models import Campaign, ConsentEvent, Message, Segment, Supporter
from crm.outbox.server import free_port
from crm.queues import queue
from crm.redis_conn import get_redis
from crm.supporters.consent import record_consent
from crm.supporters.suppression import suppress
from tests import factories
from tests.conftest import DROP_CONNECTION
from tests.factories import drain

EVERYONE = {"type": "group", "match": "all", "rules": [
    {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]}]}


@pytest.fixture
def smtp(smtp_server):
    """The suite's real SMTP server (tests/conftest.py), scriptable per recipient."""
    return smtp_server


@pytest.fixture
def send_app(make_app, smtp):
    app = make_app(SMTP_URL=smtp.url, SEND_RETRY_BACKOFF_SECONDS=0.01, SEND_RATE_PER_SECOND=1000,
                   SEND_CHUNK_SIZE=5, SEND_FLUSH_EVERY=5)
    with app.app_context():
        yield app


def segment(rules=None) -> Segment:
    seg = Segment(name=f"Segment {time.monotonic_ns()}", rules=rules or EVERYONE)
    db.session.add(seg)
    db.session.commit()
    return seg


def supporters(n: int, **overrides) -> list[Supporter]:
    return [factories.make_supporter(**overrides) for _ in range(n)]


def campaign_to(seg: Segment, **overrides) -> Campaign:
    return factories.make_campaign(segment=seg, **overrides)


def parse(envelope) -> email.message.EmailMessage:
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)


def statuses(campaign: Campaign) -> dict[str, int]:
    rows = db.session.execute(db.select(Message.status, db.func.count()).where(Message.campaign_id == campaign.id)
                              .group_by(Message.status)).all()
    return dict(rows)


# -- snapshot ---------------------------------------------------------------------------------

def test_snapshot_takes_only_mailable_members_once(send_app):
    """Subscribed members only: unsubscribed, never-subscribed, suppressed and erased are left out."""
    keep = supporters(3)
    factories.make_supporter(subscribed=False)
    gone = factories.make_supporter()
    record_consent(gone, "opt_out", "test")
    listed = factories.make_supporter()
    suppress(listed.email)
    erased = factories.make_supporter()
    erased.erased_at = datetime.now(UTC)
    db.session.commit()
    campaign = campaign_to(segment({"type": "group", "match": "all", "rules": []}))
    lifecycle.send_now(campaign)

    assert pipeline.start_campaign(campaign.id) == 3
    assert pipeline.start_campaign(campaign.id) == 0  # a second run finds it already sending
    rows = db.session.scalars(db.select(Message.supporter_id).where(Message.campaign_id == campaign.id)).all()
    assert sorted(rows) == sorted(s.id for s in keep)


def test_send_delivers_each_member_once_with_the_required_headers(send_app, smtp):
    """A sent campaign: one message per member, multipart, RFC 8058 headers, footer, token -> message."""
    people = supporters(12)
    campaign = campaign_to(segment(), subject="Update for {{ supporter.first_name }}")
    lifecycle.send_now(campaign)
    drain(send_app)

    assert sorted(smtp.handler.recipients()) == sorted(p.email for p in people)
    db.session.refresh(campaign)
    assert campaign.status == "sent"
    assert (campaign.sent_count, campaign.total) == (12, 12)
    assert statuses(campaign) == {"sent": 12}

    envelope = smtp.handler.envelopes[0]
    raw = envelope.original_content
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(envelope)
    assert not msg.defects
    message = db.session.scalars(db.select(Message).where(Message.email == envelope.rcpt_tos[0])).one()
    assert msg["Message-ID"] == message.smtp_message_id
    assert msg["Message-ID"].endswith("@news.example.org>")
    url = msg["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    assert url.startswith("https://crm.example.org/u/")
    assert read_unsubscribe_token(url.rsplit("/", 1)[1]) == message.id
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] and msg["Date"] and msg["X-Campaign-ID"] == str(campaign.id)
    assert msg["Subject"].startswith("Update for First")
    assert msg.get_content_type() == "multipart/alternative"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    for part in (html, text):
        assert "1 Test Street, London N1 1AA" in part
        assert url in part
    assert envelope.mail_from == campaign.sender.email


def test_supporter_values_cannot_inject_headers(send_app, smtp):
    """CR/LF in names never start a new header; values are escaped in the HTML part."""
    factories.make_supporter(first_name="Eve\r\nBcc: victim@example.com", last_name="<script>x</script>")
    campaign = campaign_to(segment(), subject="News for {{ supporter.first_name }}",
                           mjml=factories.DEFAULT_MJML.replace("Hello", "Hello {{ supporter.last_name }}"))
    lifecycle.send_now(campaign)
    drain(send_app)

    [envelope] = smtp.handler.envelopes
    msg = parse(envelope)
    assert msg["Bcc"] is None
    assert envelope.rcpt_tos == [envelope.rcpt_tos[0]] and "victim@example.com" not in envelope.rcpt_tos
    assert "\n" not in msg["Subject"] and "\n" not in msg["To"]
    assert "<script>" not in msg.get_body(("html",)).get_content()
    assert "&lt;script&gt;" in msg.get_body(("html",)).get_content()


def test_non_latin_names_encode_and_decode(send_app, smtp):
    """Accents and non-Latin scripts survive in From, To and Subject (RFC 2047)."""
    sender = factories.make_sender(name="Réseau Droits — 難民支援")
    factories.make_supporter(first_name="Zoë", last_name="Łukasiewicz")
    campaign = campaign_to(segment(), sender=sender, subject="Dernières nouvelles, {{ supporter.first_name }} — 更新")
    lifecycle.send_now(campaign)
    drain(send_app)

    msg = parse(smtp.handler.envelopes[0])
    assert msg["From"].addresses[0].display_name == "Réseau Droits — 難民支援"
    assert msg["To"].addresses[0].display_name == "Zoë Łukasiewicz"
    assert msg["Subject"] == "Dernières nouvelles, Zoë — 更新"
    assert "Zoë" in msg.get_body(("plain",)).get_content()


def test_international_addresses_are_delivered(send_app, smtp):
    """An IDN domain goes out in its ASCII form; a non-ASCII mailbox with SMTPUTF8 (RFC 6531/6532)."""
    factories.make_supporter(email="josé@example.net", first_name="José")
    factories.make_supporter(email="renate@bücher.de")
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)

    assert statuses(campaign) == {"sent": 2}
    by_rcpt = {e.rcpt_tos[0]: e for e in smtp.handler.envelopes}
    assert set(by_rcpt) == {"josé@example.net", "renate@xn--bcher-kva.de"}
    assert "SMTPUTF8" in by_rcpt["josé@example.net"].mail_options
    assert "SMTPUTF8" not in by_rcpt["renate@xn--bcher-kva.de"].mail_options
    utf8 = email.message_from_string(by_rcpt["josé@example.net"].original_content.decode(), policy=email.policy.default)
    assert utf8["To"].addresses[0].addr_spec == "josé@example.net"
    assert not utf8.defects
    assert parse(by_rcpt["renate@xn--bcher-kva.de"])["To"].addresses[0].addr_spec == "renate@xn--bcher-kva.de"


@pytest.mark.smtp(smtputf8=False)
def test_undeliverable_addresses_fail_alone(send_app, smtp):
    """Without SMTPUTF8 a non-ASCII mailbox fails, and a stored address no header can carry fails
    when its message is built; everyone else in the chunk is still sent, once."""
    first = supporters(1)
    factories.make_supporter(email='odd"quote@example.net')  # its envelope is announced, then withdrawn
    factories.make_supporter(email="josé@example.net")
    fine = first + supporters(2)
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)

    db.session.refresh(campaign)
    assert statuses(campaign) == {"sent": 3, "failed": 2}
    assert sorted(smtp.handler.recipients()) == sorted(p.email for p in fine)
    errors = dict(db.session.execute(db.select(Message.email, Message.error)
                                     .where(Message.campaign_id == campaign.id, Message.status == "failed")).all())
    assert "SMTPUTF8" in errors["josé@example.net"]
    assert "could not build the message" in errors['odd"quote@example.net']
    assert campaign.status == "sent"


# -- consent changes while sending -----------------------------------------------------------

def test_unsubscribe_mid_send_stops_that_message(send_app, smtp):
    """Someone who unsubscribes while the campaign sends is skipped (re-checked before sending)."""
    people = supporters(10)
    leaver = people[-1]
    campaign = campaign_to(segment())

    def unsubscribe_after_first(count, envelope):
        if count == 1:
            with send_app.app_context():
                person = db.session.get(Supporter, leaver.id)
                record_consent(person, "opt_out", "one_click", campaign_id=campaign.id)
                db.session.commit()

    smtp.handler.on_message = unsubscribe_after_first
    send_app.config["SEND_CHUNK_SIZE"] = 1
    lifecycle.send_now(campaign)
    drain(send_app)

    assert not smtp.handler.errors
    assert leaver.email not in smtp.handler.recipients()
    assert len(smtp.handler.recipients()) == 9
    row = db.session.scalars(db.select(Message).where(Message.supporter_id == leaver.id)).one()
    assert row.status == "suppressed"
    db.session.refresh(campaign)
    assert campaign.status == "sent" and campaign.suppressed_count == 1


def _one_click(app, message_id: int) -> int:
    """An RFC 8058 one-click POST for a message, as a mailbox provider sends it; its status code."""
    from campaigns.tokens import make_unsubscribe_token

    with app.app_context():
        response = app.test_client(use_cookies=False).post(
            f"/u/{make_unsubscribe_token(message_id)}", data={"List-Unsubscribe": "One-Click"})
        return response.status_code


def _row_of(supporter: Supporter) -> Message:
    return db.session.scalars(db.select(Message).where(Message.supporter_id == supporter.id)).one()


def test_unsubscribe_of_an_already_claimed_row_stops_its_message(send_app, smtp):
    """A one-click unsubscribe that answers while the person's row is claimed by a running batch:
    nothing reaches the SMTP server for them, and the row says why."""
    people = supporters(10)
    leaver = people[-2]
    campaign = campaign_to(segment())
    seen = {}

    def unsubscribe_during_second(count, envelope):
        if count == 2:  # the batch claimed all ten and waits for this reply
            with send_app.app_context():
                seen["status"] = _row_of(leaver).status
                seen["answer"] = _one_click(send_app, _row_of(leaver).id)

    smtp.handler.on_message = unsubscribe_during_second
    send_app.config["SEND_CHUNK_SIZE"] = 10
    lifecycle.send_now(campaign)
    drain(send_app)

    assert not smtp.handler.errors
    assert seen == {"status": "sending", "answer": 200}
    assert leaver.email not in smtp.handler.recipients()
    assert sorted(smtp.handler.recipients()) == sorted(p.email for p in people if p is not leaver)
    db.session.expire_all()
    row = _row_of(leaver)
    assert (row.status, row.error) == ("suppressed", "consent withdrawn while sending")
    db.session.refresh(campaign)
    assert campaign.status == "sent" and campaign.suppressed_count == 1


def test_withdrawal_missed_while_the_subscription_was_down_is_caught_by_the_database(send_app, smtp):
    """A withdrawal whose notice never arrived (the batch's Redis connection broke, as when Redis
    restarts) is still honoured: the batch asks the database once it knows it may have missed one."""
    people = supporters(10)
    leaver = people[-2]
    campaign = campaign_to(segment())

    def withdraw_silently_then_break_the_subscription(count, envelope):
        if count == 2:
            with send_app.app_context():
                # The opt-out commits, but its notice is lost (as if published into a Redis
                # that was restarting): written without record_consent's announcement.
                db.session.execute(db.update(Supporter).where(Supporter.id == leaver.id)
                                   .values(email_status="unsubscribed"))
                db.session.commit()
                get_redis().client_kill_filter(_type="pubsub")

    smtp.handler.on_message = withdraw_silently_then_break_the_subscription
    send_app.config["SEND_CHUNK_SIZE"] = 10
    lifecycle.send_now(campaign)
    drain(send_app)

    assert not smtp.handler.errors
    assert leaver.email not in smtp.handler.recipients()
    assert len(smtp.handler.recipients()) == 9
    db.session.expire_all()
    assert _row_of(leaver).status == "suppressed"


# -- SMTP outcomes ---------------------------------------------------------------------------

def test_permanent_refusals_fail_and_user_unknown_marks_bouncing(send_app, smtp):
    """550 5.1.1 -> bounced and the supporter bouncing; 552 -> failed; the rest are sent."""
    ok, unknown, full = supporters(3)
    smtp.handler.replies[unknown.email] = ["550 5.1.1 User unknown"]
    smtp.handler.replies[full.email] = ["552 5.2.2 Mailbox full"]
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)

    by_person = dict(db.session.execute(db.select(Message.supporter_id, Message.status)
                                        .where(Message.campaign_id == campaign.id)).all())
    assert by_person == {ok.id: "sent", unknown.id: "bounced", full.id: "failed"}
    db.session.refresh(unknown)
    db.session.refresh(full)
    assert unknown.email_status == "bouncing" and full.email_status == "subscribed"
    event = db.session.scalars(db.select(ConsentEvent).where(ConsentEvent.supporter_id == unknown.id)
                               .order_by(ConsentEvent.id.desc())).first()
    assert (event.action, event.campaign_id) == ("bounce", campaign.id)
    assert smtp.handler.recipients() == [ok.email]


def test_temporary_refusal_is_retried_and_delivered_once(send_app, smtp):
    """451 twice, then accepted: retried on a fresh connection and delivered exactly once."""
    person, = supporters(1)
    smtp.handler.replies[person.email] = ["451 4.3.0 Try again later", "451 4.3.0 Try again later", "250 OK"]
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)

    assert smtp.handler.recipients() == [person.email]
    assert statuses(campaign) == {"sent": 1}


def test_unsubscribe_while_a_deferred_message_waits_for_its_retry_stops_it(send_app, smtp):
    """A 451, then the person unsubscribes before the retry: the retry is not made."""
    person, other = supporters(2)
    campaign = campaign_to(segment())

    def defer_and_unsubscribe(address):
        with send_app.app_context():
            assert _one_click(send_app, _row_of(person).id) == 200
        return "451 4.3.0 Try again later"

    smtp.handler.replies[person.email] = [defer_and_unsubscribe, "250 OK"]
    lifecycle.send_now(campaign)
    drain(send_app)

    assert smtp.handler.recipients() == [other.email]
    db.session.expire_all()
    assert (_row_of(person).status, _row_of(person).error) == ("suppressed", "consent withdrawn while sending")


def test_content_refused_mid_stream_is_retried_and_the_rest_go_once(send_app, smtp):
    """The relay answers 451 to one message's content (the next envelope already behind it) and
    drops the connection after another's: the first is retried on a fresh connection and
    delivered, the second may have arrived so it is `unknown`, never resent; everyone else in
    the chunk gets exactly one message."""
    people = supporters(7)
    deferred, dropped = people[1].email, people[4].email
    answers = {deferred: ["451 4.3.0 Try again later", "250 OK"], dropped: [DROP_CONNECTION]}

    def answer(count, envelope):
        script = answers.get(envelope.rcpt_tos[0])
        return (script.pop(0) if len(script) > 1 else script[0]) if script else "250 OK"

    smtp.handler.on_message = answer
    send_app.config["SEND_ERROR_WINDOW"] = 1000  # keep the threshold out of this test
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)

    received = smtp.handler.recipients()
    assert received.count(deferred) == 2  # refused once, then accepted
    assert received.count(dropped) == 1
    assert sorted(set(received)) == sorted(p.email for p in people)
    assert all(received.count(p.email) == 1 for p in people if p.email not in (deferred, dropped))
    assert statuses(campaign) == {"sent": 6, "unknown": 1}
    row = db.session.scalars(db.select(Message).where(Message.email == dropped)).one()
    assert row.status == "unknown"


def test_persistent_deferral_ends_failed_not_resent_forever(send_app, smtp):
    """A recipient the relay keeps deferring is given up after SEND_MAX_ATTEMPTS batches."""
    person, other = supporters(2)
    smtp.handler.replies[person.email] = ["452 4.2.2 Over quota"]
    send_app.config["SEND_ERROR_WINDOW"] = 1000  # keep the threshold out of this test
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)

    db.session.refresh(campaign)
    assert campaign.status == "sent"
    row = db.session.scalars(db.select(Message).where(Message.supporter_id == person.id)).one()
    assert row.status == "failed" and row.attempts == 3
    assert smtp.handler.recipients() == [other.email]


def test_error_threshold_pauses_the_campaign_with_a_reason(send_app, smtp):
    """When failures reach the threshold the campaign pauses and says why; nothing is lost."""
    people = supporters(30)
    for person in people[:12]:
        smtp.handler.replies[person.email] = ["554 5.7.1 Rejected by policy"]
    send_app.config.update(SEND_ERROR_WINDOW=10, SEND_ERROR_RATE=0.5, SEND_CHUNK_SIZE=30)
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)

    db.session.refresh(campaign)
    assert campaign.status == "paused"
    assert "failed" in campaign.status_reason
    counts = statuses(campaign)
    assert counts.get("queued", 0) > 0 and "sending" not in counts
    assert sum(counts.values()) == 30


def test_unreachable_relay_pauses_and_gives_rows_back(make_app):
    """No relay at all: the batch gives its rows back (queued) and the campaign pauses."""
    app = make_app(SMTP_URL=f"smtp://127.0.0.1:{free_port()}", SEND_RETRY_BACKOFF_SECONDS=0.01, SEND_RETRIES=1)
    with app.app_context():
        supporters(3)
        campaign = campaign_to(segment())
        lifecycle.send_now(campaign)
        drain(app)
        db.session.refresh(campaign)
        assert campaign.status == "paused"
        assert "relay" in campaign.status_reason
        assert statuses(campaign) == {"queued": 3}


# -- pause, resume, cancel -------------------------------------------------------------------

def test_pause_mid_send_then_resume_sends_everyone_once(send_app, smtp):
    """Pause reaches the batch between messages; resume finishes; nobody is mailed twice."""
    people = supporters(15)
    campaign = campaign_to(segment())
    send_app.config["SEND_CHUNK_SIZE"] = 15

    def pause_after_third(count, envelope):
        if count == 3:
            with send_app.app_context():
                pipeline.pause(campaign.id, "Paused by staff.")
            time.sleep(0.3)  # longer than a worker takes to notice

    smtp.handler.on_message = pause_after_third
    lifecycle.send_now(campaign)
    drain(send_app)
    db.session.refresh(campaign)
    assert campaign.status == "paused"
    sent_before = len(smtp.handler.recipients())
    assert 3 <= sent_before < 15
    assert "sending" not in statuses(campaign)

    smtp.handler.on_message = None
    lifecycle.resume(campaign)
    drain(send_app)
    db.session.refresh(campaign)
    assert campaign.status == "sent"
    assert sorted(smtp.handler.recipients()) == sorted(p.email for p in people)


def test_cancel_mid_send_stops_and_marks_the_rest(send_app, smtp):
    """Cancel: unsent messages become cancelled and are never sent."""
    supporters(10)
    campaign = campaign_to(segment())
    send_app.config["SEND_CHUNK_SIZE"] = 10

    def cancel_after_second(count, envelope):
        if count == 2:
            with send_app.app_context():
                pipeline.cancel(campaign.id)
            time.sleep(0.3)

    smtp.handler.on_message = cancel_after_second
    lifecycle.send_now(campaign)
    drain(send_app)
    db.session.refresh(campaign)
    assert campaign.status == "cancelled"
    counts = statuses(campaign)
    assert counts.get("sent", 0) == len(smtp.handler.recipients()) < 10
    assert counts.get("cancelled", 0) == 10 - counts["sent"]


# -- readiness and scheduling ----------------------------------------------------------------

def test_refuses_to_send_without_a_postal_address(make_app):
    """ORG_POSTAL_ADDRESS unset: sending is refused with a message naming it."""
    app = make_app(ORG_POSTAL_ADDRESS="")
    with app.app_context():
        campaign = campaign_to(segment())
        with pytest.raises(lifecycle.LifecycleError, match="postal address is not set"):
            lifecycle.send_now(campaign)
        assert campaign.status == "draft"


def test_schedule_in_the_org_time_zone_and_stale_starts_do_nothing(make_app):
    """A London wall-clock time is stored as UTC; the workers' periodic check starts it only when
    due; an edit makes a start queued for the old version a no-op."""
    app = make_app(ORG_TIMEZONE="Europe/London")
    with app.app_context():
        supporters(2)
        campaign = campaign_to(segment())
        summer = datetime(2030, 7, 1, 9, 30)  # BST, UTC+1
        lifecycle.schedule(campaign, summer)
        assert campaign.status == "scheduled"
        assert campaign.scheduled_at.replace(tzinfo=UTC) == datetime(2030, 7, 1, 8, 30, tzinfo=UTC)
        assert lifecycle.start_due() == 0  # not due yet
        assert len(queue("mail")) == 0  # and nothing waits in Redis for it: the schedule is the row

        old_version = campaign.version
        lifecycle.content_changed(campaign)
        assert pipeline.start_campaign(campaign.id, old_version) == 0  # stale version
        assert pipeline.start_campaign(campaign.id, campaign.version) == 0  # not due yet
        assert campaign.status == "scheduled"

        lifecycle.unschedule(campaign)
        assert campaign.status == "draft" and campaign.scheduled_at is None


def test_a_scheduled_campaign_is_started_by_the_workers_when_due(send_app, smtp):
    """Once its time has come, a free worker starts it and sends it, with no job queued for it."""
    people = supporters(3)
    campaign = campaign_to(segment())
    lifecycle.schedule(campaign, datetime.now(UTC) + timedelta(hours=1))
    drain(send_app)
    assert campaign.status == "scheduled" and not smtp.handler.envelopes

    campaign.scheduled_at = datetime.now(UTC) - timedelta(seconds=1)  # the hour has passed
    db.session.commit()
    get_redis().delete("crm:periodic:start-due-campaigns")  # the last drain's interval is over
    drain(send_app)
    db.session.refresh(campaign)
    assert campaign.status == "sent"
    assert sorted(smtp.handler.recipients()) == sorted(p.email for p in people)


def test_schedule_refuses_the_past(send_app):
    """A time in the past is refused with a clear message."""
    campaign = campaign_to(segment())
    with pytest.raises(lifecycle.LifecycleError, match="future"):
        lifecycle.schedule(campaign, datetime.now(UTC) - timedelta(hours=1))


def test_test_send_goes_to_staff_only_and_is_not_counted(send_app, smtp):
    """[TEST] copies reach staff addresses, never strangers, and create no message rows."""
    staff = factories.make_staff("organizer")
    supporters(2)
    campaign = campaign_to(segment())
    with pytest.raises(lifecycle.LifecycleError, match="staff"):
        lifecycle.send_test(campaign, "stranger@example.com")
    lifecycle.send_test(campaign, staff.email.upper())
    drain(send_app)

    [envelope] = smtp.handler.envelopes
    assert envelope.rcpt_tos == [staff.email]
    assert parse(envelope)["Subject"].startswith("[TEST] ")
    assert db.session.scalar(db.select(db.func.count()).select_from(Message)) == 0


def test_cli_send_and_status(send_app, smtp):
    """`crm campaigns send ID` queues it; `crm campaigns status ID` reports the counts."""
    supporters(4)
    campaign = campaign_to(segment())
    runner = send_app.test_cli_runner()
    result = runner.invoke(args=["campaigns", "send", str(campaign.id)])
    assert result.exit_code == 0, result.output
    assert "about 4 recipients" in result.output
    drain(send_app)
    result = runner.invoke(args=["campaigns", "status", str(campaign.id)])
    assert result.exit_code == 0, result.output
    assert "sent; 4/4 sent" in result.output
    result = runner.invoke(args=["campaigns", "send", "99999"])
    assert result.exit_code != 0 and "No campaign 99999" in result.output


def test_progress_counts_and_rate(send_app, smtp):
    """Progress shows totals by outcome once sending is done."""
    ok, bad = supporters(2)
    smtp.handler.replies[bad.email] = ["550 5.1.1 No such user"]
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(send_app)
    db.session.refresh(campaign)
    p = lifecycle.progress(campaign)
    assert (p.status, p.total, p.sent, p.failed, p.queued, p.in_flight) == ("sent", 2, 1, 1, 0, 0)


# -- crash safety ----------------------------------------------------------------------------

def test_worker_killed_mid_batch_never_double_sends(send_app, smtp, database_url, redis_url, tmp_path):
    """SIGKILL a real worker process mid-batch: its in-flight rows become unknown and are never
    resent; every other message is sent by another worker; nobody receives two."""
    people = supporters(40)
    campaign = campaign_to(segment())
    smtp.handler.delay = 0.05
    lifecycle.send_now(campaign)  # the start job waits in Redis for a worker

    env = {**os.environ, "CRM_ENV": "testing", "SECRET_KEY": "test-secret-key", "DATABASE_URL": database_url,
           "REDIS_URL": redis_url, "SMTP_URL": smtp.url, "BASE_URL": "https://crm.example.org",
           "ORG_NAME": "Test Org", "ORG_POSTAL_ADDRESS": "1 Test Street, London N1 1AA",
           "CRM_INSTANCE_PATH": str(tmp_path / "instance"), "SEND_CHUNK_SIZE": "5", "SEND_FLUSH_EVERY": "5",
           "SEND_HEARTBEAT_SECONDS": "1", "SEND_RATE_PER_SECOND": "1000"}
    worker = subprocess.Popen([sys.executable, "-m", "crm.cli", "worker", "--burst", "--no-scheduler"],
                              env=env, cwd=Path(__file__).resolve().parents[1], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(smtp.handler.envelopes) < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
            assert worker.poll() is None, "the worker exited before it was killed"
        os.killpg(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(10)
    time.sleep(1.5)  # the dead batch's heartbeat expires; a message in flight at the server lands
    received_before = len(smtp.handler.envelopes)
    assert 7 <= received_before < 40
    smtp.handler.delay = 0
    db.session.expire_all()
    pipeline.sweep(campaign.id)  # what the workers' periodic sweep does
    drain(send_app)

    received = smtp.handler.recipients()
    assert len(received) == len(set(received)), "somebody was mailed twice"
    counts = statuses(campaign)
    db.session.refresh(campaign)
    assert campaign.status == "sent"
    assert "queued" not in counts and "sending" not in counts
    assert 0 < counts.get("unknown", 0) <= 5  # at most one claimed chunk was in flight
    assert counts["sent"] + counts["unknown"] == 40
    sent = set(db.session.scalars(db.select(Message.email).where(Message.campaign_id == campaign.id,
                                                                 Message.status == "sent")))
    assert sent <= set(received)
    unknown = set(db.session.scalars(db.select(Message.email).where(Message.campaign_id == campaign.id,
                                                                    Message.status == "unknown")))
    assert unknown.isdisjoint(set(received[received_before:])), "an unknown message was resent"
    assert set(received) | unknown == {p.email for p in people}
    assert get_redis().exists(f"crm:send:heartbeat:{campaign.id}") == 0

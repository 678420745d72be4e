"""The bounce mailbox: real-shaped DSNs and ARF reports in a real IMAP (and POP3) server change
exactly the statuses they should, once, and handled mail is moved or deleted."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from crm.extensions import db
from crm.models import FeedbackEvent
from crm.supporters import suppression
from feedback import mailbox
from feedback.dsn import parse_report
from tests import factories
from tests import feedback_corpus as corpus
from tests.dovecot import Dovecot, available
from tests.feedback_fixtures import sent_message


@pytest.fixture(scope="module")
def dovecot():
    if not available():
        pytest.skip("Dovecot is not installed: apt-get install dovecot-imapd dovecot-pop3d")
    server = Dovecot()
    yield server
    server.stop()


@pytest.fixture
def box(dovecot):
    dovecot.empty()
    yield dovecot
    dovecot.empty()


def person_and_message(**overrides):
    person = factories.make_supporter(**overrides)
    return person, sent_message(person)


# -- parsing, one shape at a time ---------------------------------------------------------------

@pytest.mark.parametrize("shape, hard, status", [
    (corpus.postfix_dsn, True, "5.1.1"),
    (corpus.gmail_dsn, True, "5.1.1"),
    (corpus.exchange_ndr, True, "5.1.10"),
    (corpus.gmail_plain, True, "5.2.1"),
    (corpus.postfix_plain, True, "5.1.1"),
    (corpus.qmail, True, "5.1.1"),
])
def test_each_bounce_shape_names_the_recipient_status_and_our_message(app, shape, hard, status):
    """RFC 3464 DSNs and the DSN-less notices all yield a bounce for the right address and message."""
    person, message = person_and_message()
    (fb,) = parse_report(shape(message, person.email))
    assert (fb.kind, fb.address, fb.hard, fb.status) == ("bounce", person.email, hard, status)
    assert fb.message_id == message.smtp_message_id.strip("<>")
    assert fb.message_ref == f"{message.campaign_id}.{message.id}"
    assert person.email not in fb.detail  # addresses are masked in what we keep


def test_reports_that_ask_for_nothing_and_mail_that_is_no_report(app):
    """A delay and not-spam feedback: []; an out-of-office reply: None (left for a person)."""
    person, message = person_and_message()
    delayed = parse_report(corpus.postfix_dsn(message, person.email, status="4.4.1", action="delayed"))
    assert [f.kind for f in delayed] == ["delay"]
    assert parse_report(corpus.arf(message, person.email, feedback_type="not-spam")) == []
    assert parse_report(corpus.out_of_office(person.email)) is None


def test_arf_reports_are_complaints_even_redacted(app):
    """ARF with the recipient, and a redacted one that returns only our headers."""
    person, message = person_and_message()
    (full,) = parse_report(corpus.arf(message, person.email))
    assert (full.kind, full.address) == ("complaint", person.email)
    (redacted,) = parse_report(corpus.arf(message, None, redacted=True))
    assert redacted.address is None and redacted.message_id == message.smtp_message_id.strip("<>")


# -- the real server ------------------------------------------------------------------------------

def test_fetch_applies_every_report_once_and_clears_the_inbox(app, box):
    """A mixed mailbox: the right statuses change; handled mail goes to Processed, the
    out-of-office reply to Unrecognised; a second fetch finds nothing and changes nothing."""
    hard = [person_and_message() for _ in range(6)]
    soft_person, soft_message = person_and_message()
    complainer, complained_message = person_and_message()
    redacted_person, redacted_message = person_and_message()
    delayed_person, delayed_message = person_and_message()
    shapes = [corpus.postfix_dsn, corpus.gmail_dsn, corpus.exchange_ndr, corpus.gmail_plain, corpus.postfix_plain,
              corpus.qmail]
    mail = [shape(m, p.email) for shape, (p, m) in zip(shapes, hard, strict=True)]
    mail += [corpus.postfix_dsn(soft_message, soft_person.email, status="4.2.2",
                                diagnostic="smtp; 452 4.2.2 Mailbox full", n=2),
             corpus.arf(complained_message, complainer.email),
             corpus.arf(redacted_message, None, redacted=True, n=3),
             corpus.postfix_dsn(delayed_message, delayed_person.email, status="4.4.1", action="delayed", n=4),
             corpus.out_of_office("someone@example.net")]
    box.append(mail)

    result = mailbox.fetch(box.url(processed="Processed"))

    assert (result.read, result.applied, result.unrecognised) == (11, 9, 1)
    db.session.expire_all()
    assert [p.email_status for p, _ in hard] == ["bouncing"] * 6
    assert all(suppression.entry_for(p.email).reason == "bounced" for p, _ in hard)
    assert soft_person.email_status == "subscribed" and soft_message.bounce_type == "soft"
    assert (complainer.email_status, redacted_person.email_status) == ("complained", "complained")
    assert delayed_person.email_status == "subscribed"
    assert (box.count("INBOX"), box.count("Processed"), box.count("Unrecognised")) == (0, 10, 1)

    events = db.session.scalar(select(func.count()).select_from(FeedbackEvent))
    box.append(mail[:3])  # the same reports again (a crash between commit and delete, say)
    again = mailbox.fetch(box.url())
    assert (again.duplicate, again.applied) == (3, 0)
    assert db.session.scalar(select(func.count()).select_from(FeedbackEvent)) == events
    assert box.count("INBOX") == 0  # without processed=, handled mail is deleted


def test_forged_reports_for_guessable_refs_change_nothing(app, box):
    """A DSN naming our ref but another address, and a report with a made-up Message-ID: unmatched."""
    from types import SimpleNamespace

    person, message = person_and_message()
    guessed = SimpleNamespace(id=message.id, campaign_id=message.campaign_id,
                              smtp_message_id=f"<{message.id}.{message.campaign_id}.ffffffffffff@news.example.org>")
    box.append([corpus.postfix_dsn(guessed, "attacker-chosen@example.net"),
                corpus.arf(guessed, None, redacted=True)])
    result = mailbox.fetch(box.url())
    assert result.unmatched == 2
    db.session.expire_all()
    assert person.email_status == "subscribed"


def test_verp_return_path_matches_a_dsn_that_quotes_nothing(make_app, box):
    """With BOUNCE_VERP the envelope address alone identifies the message."""
    app = make_app(BOUNCE_ADDRESS="bounces@news.example.org", BOUNCE_VERP="1")
    with app.app_context():
        person, message = person_and_message()
        box.append([corpus.verp_only(message, person.email)])
        assert mailbox.fetch(box.url()).applied == 1
        db.session.expire_all()
        assert person.email_status == "bouncing"


def test_pop3_mailbox(app, box):
    """POP3: handled mail is deleted, mail that is no report stays and is skipped next time."""
    person, message = person_and_message()
    box.append([corpus.gmail_dsn(message, person.email), corpus.out_of_office("x@example.net")])
    result = mailbox.fetch(box.url("pop3"))
    assert (result.applied, result.unrecognised) == (1, 1)
    assert box.count("INBOX") == 1
    assert mailbox.fetch(box.url("pop3")).read == 0
    db.session.expire_all()
    assert person.email_status == "bouncing"


def test_the_cli_and_the_periodic_task_read_the_configured_mailbox(make_app, box):
    """`crm bounces fetch` and the workers' periodic task use BOUNCE_MAILBOX_URL."""
    from workers.periodic import PERIODIC, run_due

    app = make_app(BOUNCE_MAILBOX_URL=box.url())
    with app.app_context():
        person, message = person_and_message()
        box.append([corpus.qmail(message, person.email)])
        output = app.test_cli_runner().invoke(args=["bounces", "fetch"])
        assert output.exit_code == 0 and "applied 1" in output.output
        other, other_message = person_and_message()
        box.append([corpus.postfix_dsn(other_message, other.email)])
        from crm.redis_conn import get_redis

        tasks = tuple(t for t in PERIODIC if t.name == "fetch-bounce-mailbox")
        ran = run_due(app, get_redis(app), "test-worker", tasks)
        assert ran == ["fetch-bounce-mailbox"]
        db.session.expire_all()
        assert (person.email_status, other.email_status) == ("bouncing", "bouncing")


def test_mailbox_url_is_checked_at_start(make_app):
    """A malformed BOUNCE_MAILBOX_URL stops start-up naming the variable."""
    from crm.config import ConfigError

    with pytest.raises(ConfigError, match="BOUNCE_MAILBOX_URL"):
        make_app(BOUNCE_MAILBOX_URL="ftp://x@host/")
    assert mailbox.describe_mailbox("imaps://u:secret@mail.example.org/INBOX").find("secret") == -1

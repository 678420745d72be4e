"""Who can bring a bounced or complained address back, and who cannot (petitions, imports, staff)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.extensions import db
from crm.models import ConsentEvent, Signature, Supporter, utcnow
from crm.supporters import suppression
from crm.supporters.service import SupporterError, staff_resubscribe
from feedback.apply import apply_feedback
from feedback.types import Feedback
from tests import factories
from tests.test_signing import sign


def complained(email="ada@example.net"):
    person = factories.make_supporter(email=email)
    campaign = factories.make_campaign(status="sent")
    message = factories.make_message(campaign, person, sent_at=utcnow())
    apply_feedback(Feedback(provider="ses", kind="complaint", event_id=f"c-{email}", address=email,
                            message_ref=f"{campaign.id}.{message.id}", detail="abuse"))
    db.session.expire_all()
    return person


def bounced(email="ada@example.net"):
    person = factories.make_supporter(email=email)
    campaign = factories.make_campaign(status="sent")
    message = factories.make_message(campaign, person, sent_at=utcnow())
    apply_feedback(Feedback(provider="ses", kind="bounce", event_id=f"b-{email}", address=email,
                            message_ref=f"{campaign.id}.{message.id}", hard=True, status="5.1.1"))
    db.session.expire_all()
    return person


def last_event(person) -> ConsentEvent:
    return db.session.scalar(select(ConsentEvent).where(ConsentEvent.supporter_id == person.id)
                             .order_by(ConsentEvent.id.desc()).limit(1))


def test_implied_consent_never_brings_a_complainer_back(app, client):
    """Signing an implied-consent petition records the signature; the complaint stands."""
    person = complained()
    sign(client, factories.make_petition())
    db.session.expire_all()
    assert person.email_status == "complained" and suppression.is_suppressed(person.email)
    assert db.session.scalar(select(Signature.supporter_id)) == person.id


def test_an_unticked_box_never_brings_a_complainer_back(app, client):
    """Checkbox mode with the box left empty: still complained."""
    person = complained()
    sign(client, factories.make_petition(consent_mode="checkbox", consent_wording="Tick for updates."))
    db.session.expire_all()
    assert person.email_status == "complained"


def test_ticking_the_box_is_the_one_way_back_and_the_record_shows_it(app, client):
    """A fresh explicit opt-in by the person: resubscribed, off the list, the reason recorded."""
    person = complained()
    sign(client, factories.make_petition(consent_mode="checkbox", consent_wording="Tick for updates."),
         consent="y")
    db.session.expire_all()
    assert person.email_status == "subscribed" and not suppression.is_suppressed(person.email)
    event = last_event(person)
    assert (event.action, event.wording) == ("resubscribe", "Tick for updates.")
    assert "after a spam complaint" in event.reason and event.ip


def test_a_bounced_address_comes_back_when_the_person_opts_in_afresh(app, client):
    """They typed the address themselves: resubscribed, bounce entry lifted."""
    person = bounced()
    sign(client, factories.make_petition())
    db.session.expire_all()
    assert person.email_status == "subscribed" and not suppression.is_suppressed(person.email)
    assert "after the address had bounced" in last_event(person).reason


def test_staff_cannot_resubscribe_a_bounced_address_without_taking_it_off_the_list(app):
    """Staff must first remove the bounce entry with a reason; a complainer never."""
    person = bounced()
    admin = factories.make_staff("admin")
    with pytest.raises(SupporterError, match="Remove it from the list first"):
        staff_resubscribe(person, admin.id, "asked by phone")
    suppression.remove_by_staff(suppression.entry_for(person.email).id, admin.id, "mailbox fixed, confirmed")
    staff_resubscribe(person, admin.id, "asked by phone")
    assert person.email_status == "subscribed"

    other = complained("bob@example.net")
    with pytest.raises(SupporterError):
        staff_resubscribe(other, admin.id, "asked by phone")


def test_an_import_cannot_resubscribe_a_complainer(app, tmp_path):
    """The import rejects the suppressed address (reason 'suppressed'); status stays complained."""
    from tests.test_imports import do_import, rejected_rows

    person = complained()
    job = do_import(tmp_path, "Email,Opt-in\nAda@Example.net,yes\n")
    db.session.expire_all()
    assert person.email_status == "complained"
    assert [r["reason"] for r in rejected_rows(job)] == ["suppressed"]


# -- a complainer signing an implied-consent petition: asked once by mail ------------------------

@pytest.fixture
def mail_app(make_app, smtp_server):
    app = make_app(SMTP_URL=smtp_server.url, SEND_RATE_PER_SECOND=1000)
    with app.app_context():
        yield app


def confirmation_mails(smtp_server) -> list:
    from tests.test_double_opt_in import mails

    return [msg for msg in mails(smtp_server) if "email updates from" in msg["Subject"]]


def thanks_page(client, petition, email: str) -> bytes:
    """The public answer to signing, with the petition's own address taken out."""
    response = sign(client, petition, email=email)
    assert response.status_code == 200
    return response.data.replace(petition.slug.encode(), b"SLUG")


def test_a_complainer_signing_an_implied_petition_is_asked_once_by_mail(mail_app, smtp_server):
    """Signature recorded; still complained and absent from the next snapshot; the thank-you page is byte for
    byte a stranger's; one mail asking whether they want updates again, none more within the hour, no reminder."""
    from campaigns import lifecycle
    from crm.models import Message, SignatureConfirmation
    from crm.petitions import confirmation
    from tests.factories import drain
    from tests.test_pipeline import campaign_to, segment

    client = mail_app.test_client()
    person = complained()
    wording = "By signing you will receive our periodic email updates."
    theirs = factories.make_petition(title="Safe routes", consent_wording=wording)
    strangers = factories.make_petition(title="Safe routes", consent_wording=wording)

    assert thanks_page(client, theirs, "ada@example.net") == thanks_page(client, strangers, "new@example.net")
    db.session.expire_all()
    assert person.email_status == "complained" and suppression.is_suppressed(person.email)
    assert db.session.scalar(select(Signature.id).where(Signature.petition_id == theirs.id,
                                                        Signature.supporter_id == person.id))
    stranger = db.session.scalar(select(Supporter).where(Supporter.email == "new@example.net"))
    assert stranger.email_status == "subscribed"  # a never-complained signer: subscribed at once, as before

    sign(client, factories.make_petition(consent_wording=wording))  # another petition at once: no second mail
    campaign = campaign_to(segment())
    lifecycle.send_now(campaign)
    drain(mail_app)
    [msg] = confirmation_mails(smtp_server)
    assert msg["To"] == "ada@example.net" and msg["Subject"] == "Would you like email updates from Test Org again?"
    assert "not on our mailing list" in msg.get_body(("plain",)).get_content()
    recipients = set(db.session.scalars(select(Message.supporter_id).where(Message.campaign_id == campaign.id)))
    assert person.id not in recipients and stranger.id in recipients
    row = db.session.scalars(select(SignatureConfirmation)).one()
    assert row.after_complaint and row.supporter_id == person.id

    row.created_at = utcnow() - timedelta(hours=float(mail_app.config["SIGN_CONFIRM_REMINDER_HOURS"]) + 1)
    db.session.commit()
    assert confirmation.remind_and_expire()["reminded"] == 0
    drain(mail_app)
    assert len(confirmation_mails(smtp_server)) == 1


def test_only_pressing_the_mailed_button_brings_a_complainer_back(mail_app, smtp_server):
    """GET of the link changes nothing; the button resubscribes them, lifts the complaint's entry, and the
    consent event says it was a fresh explicit opt-in confirmed by email."""
    from crm.petitions import confirmation
    from tests.factories import drain
    from tests.test_double_opt_in import link_in

    client = mail_app.test_client()
    person = complained()
    petition = factories.make_petition(consent_wording="Sign for our periodic updates.")
    sign(client, petition)
    drain(mail_app)
    [msg] = confirmation_mails(smtp_server)
    path = link_in(msg)
    page = client.get(path)
    assert page.status_code == 200 and "Yes, send me email updates again" in page.text
    db.session.expire_all()
    assert person.email_status == "complained"

    done = client.post(path)
    assert done.status_code == 200 and "you are subscribed" in done.text
    db.session.expire_all()
    assert person.email_status == "subscribed" and not suppression.is_suppressed(person.email)
    event = last_event(person)
    assert (event.action, event.source, event.wording) == ("resubscribe", f"petition:{petition.slug}",
                                                           "Sign for our periodic updates.")
    assert event.reason == confirmation.AFTER_COMPLAINT_REASON and "fresh explicit opt-in" in event.reason
    assert "already confirmed" in client.post(path).text and last_event(person).id == event.id

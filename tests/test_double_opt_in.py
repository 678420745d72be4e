"""Double opt-in per petition: deferred consent, the mail sent by a real worker over real SMTP, the
confirm link, re-signing, the one reminder, the expiry, and the petition page's pending list."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest

from crm.extensions import db
from crm.models import ConsentEvent, ConsentWording, Signature, SignatureConfirmation, Supporter
from crm.petitions import confirmation
from tests import factories
from tests.factories import drain

IP = "203.0.113.7"
UA = "Mozilla/5.0 (Test) Signer"


@pytest.fixture
def app(make_app, smtp_server):
    app = make_app(SMTP_URL=smtp_server.url, SEND_RATE_PER_SECOND=1000)
    with app.app_context():
        yield app


def sign(client, petition, **overrides):
    data = {"email": "ada@example.net", "first_name": "Ada", "last_name": "Lovelace", "postal_code": "N1 1AA",
            "country": "gb", "website": "", **overrides}
    return client.post(f"/p/{petition.slug}/sign", data=data, environ_base={"REMOTE_ADDR": IP},
                       headers={"User-Agent": UA})


def mails(smtp_server) -> list:
    return [email.message_from_bytes(e.original_content, policy=email.policy.default)
            for e in smtp_server.handler.envelopes]


def link_in(msg) -> str:
    text = msg.get_body(("plain",)).get_content()
    found = re.search(r"https://crm\.example\.org(/confirm/[\w.-]+)", text)
    assert found, text
    return found.group(1)


def supporter(address: str = "ada@example.net") -> Supporter:
    return db.session.scalars(db.select(Supporter).where(Supporter.email == address)
                              .execution_options(populate_existing=True)).one()


def events(person: Supporter) -> list[ConsentEvent]:
    return list(db.session.scalars(db.select(ConsentEvent).where(ConsentEvent.supporter_id == person.id)
                                   .order_by(ConsentEvent.id)))


def pending() -> SignatureConfirmation:
    return db.session.scalars(db.select(SignatureConfirmation)
                              .execution_options(populate_existing=True)).one()


def age(days: float = 0, hours: float = 0) -> None:
    """Move the pending request's signing time back, as if that much time had passed."""
    row = pending()
    row.created_at = datetime.now(UTC) - timedelta(days=days, hours=hours)
    db.session.commit()


@pytest.fixture
def petition(app):
    return factories.make_petition(double_opt_in=True)


def test_off_by_default_signing_subscribes_at_once(app, client, smtp_server):
    """A petition without double opt-in subscribes its signers at once and mails nobody."""
    plain = factories.make_petition()
    assert not plain.double_opt_in
    assert sign(client, plain).status_code in (200, 302)
    drain(app)
    assert supporter().email_status == "subscribed" and smtp_server.handler.envelopes == []


def test_signer_confirms_through_the_mailed_link(app, client, smtp_server, petition):
    """Signed: counted, not subscribed, one mail from the worker. GET changes nothing; the button subscribes
    with a consent event pointing at the signature's wording; a second press is harmless."""
    assert sign(client, petition).status_code in (200, 302)
    signer = supporter()
    assert signer.email_status == "never_subscribed" and events(signer) == []
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)) == 1
    drain(app)
    [msg] = mails(smtp_server)
    assert msg["To"] == "ada@example.net" and msg["Subject"].startswith("Please confirm")
    html = msg.get_body(("html",)).get_content()
    assert petition.title in html and petition.consent_wording in html and "Dear Ada" in html
    path = link_in(msg)
    assert f'href="https://crm.example.org{path}"' in html

    page = client.get(path)
    assert page.status_code == 200 and "Yes, send me email updates" in page.text
    assert page.headers["Cache-Control"] == "no-store" and "Set-Cookie" not in page.headers
    assert supporter().email_status == "never_subscribed"

    done = client.post(path)
    assert done.status_code == 200 and "you are subscribed" in done.text
    signer = supporter()
    assert signer.email_status == "subscribed"
    [event] = events(signer)
    wording = db.session.scalars(db.select(ConsentWording).where(ConsentWording.petition_id == petition.id)).one()
    assert (event.action, event.source, event.wording_id, event.wording_version, event.wording) == (
        "opt_in", f"petition:{petition.slug}", wording.id, wording.version, petition.consent_wording)
    assert event.reason == confirmation.SOURCE_REASON and event.ip == "127.0.0.1"

    again = client.post(path)
    assert again.status_code == 200 and "already confirmed" in again.text
    assert len(events(supporter())) == 1
    assert client.get(path).status_code == 200


def test_tampered_link_gets_the_friendly_400(app, client, petition):
    """A changed or foreign token: the unsubscribe pages' 400, for GET and POST."""
    sign(client, petition)
    good = confirmation.make_confirm_token(pending().id)
    for bad in (good[:-2], good + "x", "nonsense", confirmation.make_confirm_token(999)):
        assert client.get(f"/confirm/{bad}").status_code == 400
        assert client.post(f"/confirm/{bad}").status_code == 400
    assert supporter().email_status == "never_subscribed"


def test_cross_site_post_does_not_confirm(app, client, petition):
    """A hostile page cannot confirm for its visitor (Fetch Metadata)."""
    sign(client, petition)
    path = f"/confirm/{confirmation.make_confirm_token(pending().id)}"
    assert client.post(path, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert supporter().email_status == "never_subscribed"


def test_resigning_while_pending_sends_no_second_mail_within_the_hour(app, client, smtp_server, petition):
    """Signing again at once sends nothing; an hour after the last mail it sends the link again."""
    sign(client, petition)
    sign(client, petition)
    drain(app)
    assert len(mails(smtp_server)) == 1
    row = pending()
    row.sent_at = datetime.now(UTC) - timedelta(minutes=61)
    db.session.commit()
    sign(client, petition)
    sign(client, petition)
    drain(app)
    assert len(mails(smtp_server)) == 2 and pending().send_count == 2
    assert link_in(mails(smtp_server)[0]) == link_in(mails(smtp_server)[1])


def test_one_reminder_then_expiry(app, client, smtp_server, petition):
    """After the reminder delay one reminder goes, never a second; after the expiry the link lapses and the
    signature stays."""
    sign(client, petition)
    drain(app)
    assert confirmation.remind_and_expire() == {"expired": 0, "reminded": 0}  # not due yet
    age(hours=float(app.config["SIGN_CONFIRM_REMINDER_HOURS"]) + 1)
    assert confirmation.remind_and_expire() == {"expired": 0, "reminded": 1}
    assert confirmation.remind_and_expire() == {"expired": 0, "reminded": 0}
    drain(app)
    first, reminder = mails(smtp_server)
    assert reminder["Subject"].startswith("Reminder:") and link_in(reminder) == link_in(first)

    age(days=int(app.config["SIGN_CONFIRM_EXPIRY_DAYS"]) + 1)
    assert confirmation.remind_and_expire()["expired"] == 1
    path = link_in(first)
    assert "has lapsed" in client.get(path).text
    assert "has lapsed" in client.post(path).text
    assert supporter().email_status == "never_subscribed"
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)) == 1
    drain(app)
    assert len(mails(smtp_server)) == 2

    # Signing again, as the lapsed page says, starts the request afresh with a new mail.
    sign(client, petition)
    drain(app)
    assert len(mails(smtp_server)) == 3 and pending().expired_at is None
    assert "you are subscribed" in client.post(path).text


def test_expiry_is_configurable(make_app, smtp_server):
    """SIGN_CONFIRM_EXPIRY_DAYS decides when a request lapses, even before the periodic task marks it."""
    app = make_app(SMTP_URL=smtp_server.url, SIGN_CONFIRM_EXPIRY_DAYS=3)
    with app.app_context():
        petition = factories.make_petition(double_opt_in=True)
        client = app.test_client()
        sign(client, petition)
        age(days=2)
        path = f"/confirm/{confirmation.make_confirm_token(pending().id)}"
        assert "Yes, send me email updates" in client.get(path).text
        age(days=4)
        assert "has lapsed" in client.post(path).text
        assert supporter().email_status == "never_subscribed"


def test_subscribed_signer_needs_no_confirmation(app, client, smtp_server, petition):
    """Someone already subscribed gets their opt-in recorded at once, as on any petition, and no mail."""
    known = factories.make_supporter(email="ada@example.net")
    sign(client, petition)
    drain(app)
    assert smtp_server.handler.envelopes == []
    assert [e.action for e in events(supporter())] == ["opt_in", "opt_in"]
    assert db.session.scalar(db.select(db.func.count()).select_from(SignatureConfirmation)) == 0
    assert known.id == supporter().id


def test_unticked_checkbox_asks_nothing(app, client, smtp_server):
    """Checkbox mode without the box ticked: no consent to confirm, no mail."""
    petition = factories.make_petition(double_opt_in=True, consent_mode="checkbox")
    sign(client, petition)
    drain(app)
    assert smtp_server.handler.envelopes == [] and supporter().email_status == "never_subscribed"


def test_editor_switch_and_pending_list(app, client_as, petition):
    """The editor offers the switch (off for a new petition) and explains it; the petition page lists who
    is waiting."""
    staff = client_as("organizer")
    new = staff.get("/petitions/new").text
    assert 'name="double_opt_in"' in new and "checked" not in re.search(r'<input[^>]*double_opt_in[^>]*>', new).group(0)
    assert "Off by default" in new
    edit = staff.get(f"/petitions/{petition.id}/edit").text
    assert re.search(r'<input[^>]*checked[^>]*double_opt_in|<input[^>]*double_opt_in[^>]*checked', edit)
    sign(app.test_client(), petition)
    page = staff.get(f"/petitions/{petition.id}").text
    assert "Waiting for confirmation (1)" in page and "ada@example.net" in page


def test_saving_the_petition_keeps_the_switch(app, client_as):
    """Ticking the box in the editor turns double opt-in on for that petition."""
    staff = client_as("organizer")
    response = staff.post("/petitions/new", data={
        "slug": "safe-routes", "title": "Safe routes", "goal": "100", "consent_wording": "Updates by email.",
        "consent_mode": "implied", "double_opt_in": "y"})
    assert response.status_code == 302
    from crm.models import Petition

    assert db.session.scalars(db.select(Petition).where(Petition.slug == "safe-routes")).one().double_opt_in

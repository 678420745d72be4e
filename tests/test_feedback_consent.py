"""Who can bring a bounced or complained address back, and who cannot (petitions, imports, staff)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.extensions import db
from crm.models import ConsentEvent, Signature, utcnow
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

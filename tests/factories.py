"""Row factories with sequences for unique values: make_supporter(email=..., **overrides)."""

from __future__ import annotations

import itertools

from crm.extensions import db
from crm.models import Campaign, Message, Petition, SenderIdentity, Signature, StaffUser, Supporter
from crm.supporters.consent import record_consent
from workers.run import run_worker

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


def make_staff(role: str = "organizer", email: str | None = None, password: str = PASSWORD,
               **overrides) -> StaffUser:
    n = next(_seq)
    values = {"email": email or f"{role}{n}@staff.example.org", "name": f"{role.title()} {n}",
              "role": role, "active": True, **overrides}
    user = StaffUser(**values)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def drain(app) -> None:
    """Run every queued job in this process until the queues are empty."""
    db.session.commit()
    run_worker(app, burst=True, with_scheduler=False)
    db.session.expire_all()


def signed_in_client(app, role: str):
    """A test client of `app` signed in as a new staff member of `role`, through the real login form."""
    user = make_staff(role)
    client = app.test_client()
    response = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 302, response.text
    client.user = user
    return client


def make_supporter(email: str | None = None, subscribed: bool = True, **overrides) -> Supporter:
    n = next(_seq)
    values = {"email": email or f"supporter{n}@example.net", "first_name": f"First{n}",
              "last_name": f"Last{n}", **overrides}
    supporter = Supporter(**values)
    db.session.add(supporter)
    if subscribed:
        record_consent(supporter, "opt_in", "test", wording="Test wording")
    db.session.commit()
    return supporter


def make_petition(**overrides) -> Petition:
    n = next(_seq)
    values = {"slug": f"petition-{n}", "title": f"Petition {n}", "status": "open",
              "consent_wording": "By signing this petition you will receive periodic email updates."}
    values.update(overrides)
    petition = Petition(**values)
    db.session.add(petition)
    db.session.commit()
    return petition


def make_signature(petition: Petition, supporter: Supporter, **overrides) -> Signature:
    signature = Signature(petition=petition, supporter=supporter, **overrides)
    db.session.add(signature)
    db.session.commit()
    return signature


def make_api_key(scope: str = "read_write", label: str | None = None) -> tuple[int, str]:
    """A new API key made through the service: (its id, its token)."""
    from api.keys import create_key

    key, token = create_key(label or f"Test key {next(_seq)}", scope, None)
    return key.id, token


def make_sender(**overrides) -> SenderIdentity:
    n = next(_seq)
    values = {"name": "Test Org", "email": f"news{n}@news.example.org", **overrides}
    sender = SenderIdentity(**values)
    db.session.add(sender)
    db.session.commit()
    return sender


DEFAULT_MJML = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hello {{ supporter.first_name | default("friend") }},</mj-text>
<mj-text>Here is our periodic update.</mj-text>
</mj-column></mj-section></mj-body></mjml>"""


def make_campaign(segment=None, sender=None, **overrides) -> Campaign:
    n = next(_seq)
    values = {"name": f"Campaign {n}", "subject": f"Update {n}", "mjml": DEFAULT_MJML,
              "sender": sender or make_sender(), "segment": segment, **overrides}
    campaign = Campaign(**values)
    db.session.add(campaign)
    db.session.commit()
    return campaign


def make_message(campaign: Campaign, supporter: Supporter, **overrides) -> Message:
    values = {"campaign_id": campaign.id, "supporter_id": supporter.id, "email": supporter.email,
              "status": "sent", **overrides}
    message = Message(**values)
    db.session.add(message)
    db.session.commit()
    return message

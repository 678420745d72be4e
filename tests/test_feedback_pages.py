"""Staff pages: the suppression list (search, add, upload, remove with a reason), list health,
the dashboard line, the campaign pages' banner and the provider settings."""

from __future__ import annotations

import io

from sqlalchemy import insert, select

from crm.extensions import db
from crm.models import AuditLog, Campaign, FeedbackProvider, Message, utcnow
from crm.supporters import suppression
from feedback import health
from feedback.apply import apply_feedback
from feedback.types import Feedback
from tests import factories
from tests.feedback_fixtures import ref, sent_message


def test_suppression_page_lists_why_and_since_and_searches(app, client_as):
    """Bounced and staff entries show their address; an erased one its hash; search by part or whole."""
    person = factories.make_supporter(email="gone@example.org")
    message = sent_message(person)
    apply_feedback(Feedback(provider="ses", kind="bounce", event_id="b", address=person.email,
                            message_ref=ref(message), hard=True, status="5.1.1"))
    suppression.suppress("erased@example.org", "erased")
    db.session.commit()
    client = client_as("analyst")
    page = client.get("/suppression").text
    assert "gone@example.org" in page and "bounce:ses" in page and "erased@example.org" not in page
    assert "hash " in page and "Remove…" not in page  # analysts cannot remove
    assert "gone@example.org" in client.get("/suppression?q=gone@").text
    found = client.get("/suppression?q=Erased@Example.org").text  # a whole erased address, by hash
    assert "hash " in found and "gone@example.org" not in found


def test_staff_add_upload_and_remove_with_a_reason(app, client_as):
    """Add one; upload a CSV (bad rows listed); remove needs a reason and is audit-logged; never a complaint."""
    client = client_as("organizer")
    assert client.post("/suppression/add", data={"address": "Ann@Example.org", "note": "asked by letter"}
                       ).status_code == 302
    assert suppression.entry_for("ann@example.org").reason == "staff"
    csv_file = io.BytesIO(b"Name,Email\nBo,bo@example.org\nCy,not-an-address\nAnn,ann@example.org\n")
    response = client.post("/suppression/upload", data={"file": (csv_file, "list.csv"), "note": "old list"},
                           content_type="multipart/form-data")
    assert response.status_code == 200 and "line 3" in response.text
    assert suppression.is_suppressed("bo@example.org")
    entry = suppression.entry_for("bo@example.org")
    assert client.post(f"/suppression/{entry.id}/remove", data={"reason": ""}).status_code == 400
    assert client.post(f"/suppression/{entry.id}/remove", data={"reason": "typo in the old list"}
                       ).status_code == 302
    assert not suppression.is_suppressed("bo@example.org")
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "suppression.remove"))
    assert audit.details["reason"] == "typo in the old list" and "bo@example.org" not in str(audit.details)

    person = factories.make_supporter()
    message = sent_message(person)
    apply_feedback(Feedback(provider="ses", kind="complaint", event_id="c", address=person.email,
                            message_ref=ref(message)))
    complaint = suppression.entry_for(person.email)
    refused = client.post(f"/suppression/{complaint.id}/remove", data={"reason": "they said sorry"})
    assert refused.status_code == 400 and suppression.is_suppressed(person.email)


def test_analysts_cannot_change_the_list(app, client_as):
    client = client_as("analyst")
    assert client.post("/suppression/add", data={"address": "x@example.org"}).status_code == 403


def _campaign(name, sent, complaints, hard=0, status="sent"):
    campaign = factories.make_campaign(name=name, status=status, started_at=utcnow(), sent_count=sent)
    for n in range(complaints + hard):
        person = factories.make_supporter()
        message = sent_message(person, campaign=campaign)
        kind = "complaint" if n < complaints else "bounce"
        apply_feedback(Feedback(provider="ses", kind=kind, event_id=f"{name}-{n}", address=person.email,
                                message_ref=ref(message), hard=True))
    return campaign


def test_list_health_rates_and_the_banner(app, client_as):
    """Rates per campaign and over 30 days; the banner shows when the latest passed 0.1%."""
    _campaign("Spring update", 2000, 1, hard=20)
    client = client_as("analyst")
    assert "complaint-banner" not in client.get("/campaigns/").text  # 0.05%
    latest = _campaign("Summer update", 1000, 2)
    page = client.get("/list-health").text
    assert "Summer update" in page and "0.200%" in page and "1.00%" in page  # 2/1000 complaints, 20/2000 hard
    assert 'data-threshold="0.001"' in page and 'data-threshold="0.003"' in page
    banner = client.get("/campaigns/").text
    assert "complaint-banner" in banner and "Summer update" in banner
    assert "complaint-banner" in client.get(f"/campaigns/{latest.id}").text
    dashboard = client.get("/").text
    assert "health-line" in dashboard and "spam complaints" in dashboard
    window = health.window()
    assert (window.sent, window.complaints, window.hard) == (3000, 3, 20)


def test_refused_at_the_door_bounces_count_in_the_rate(app):
    """A message the relay refused (status bounced) is in the denominator and the hard count."""
    campaign = factories.make_campaign(status="sent", started_at=utcnow(), sent_count=99)
    person = factories.make_supporter()
    message = factories.make_message(campaign, person, status="bounced")
    apply_feedback(Feedback(provider="smtp", kind="bounce", event_id=f"message:{message.id}", address=person.email,
                            message_ref=ref(message), hard=True))
    (h,) = health.campaigns_health([campaign])
    assert (h.sent, h.hard, h.hard_rate) == (100, 1, 0.01)


def test_live_campaign_counts_sent_messages(app):
    """A campaign still sending counts its sent rows, not its (unset) final counter."""
    campaign = factories.make_campaign(status="sending", started_at=utcnow())
    now = utcnow()
    db.session.execute(insert(Message), [{"campaign_id": campaign.id, "supporter_id": None, "email": f"a{i}@x.org",
                                          "status": "sent", "attempts": 1, "error": "", "created_at": now}
                                         for i in range(5)])
    db.session.commit()
    assert health.campaigns_health([db.session.get(Campaign, campaign.id)])[0].sent == 5


def test_settings_page_saves_providers_and_never_shows_secrets(app, client_as):
    """Admins save a provider; the secret is stored encrypted, never shown again; empty keeps it."""
    admin = client_as("admin")
    page = admin.get("/settings/feedback/")
    assert page.status_code == 200 and "https://crm.example.org/hooks/ses" in page.text
    response = admin.post("/settings/feedback/mailgun", data={"mailgun-enabled": "y",
                                                             "mailgun-secret": "key-very-secret-123"})
    assert response.status_code == 302
    row = db.session.get(FeedbackProvider, "mailgun")
    assert row.enabled and row.secret and "key-very-secret-123" not in row.secret
    shown = admin.get("/settings/feedback/").text
    assert "key-very-secret-123" not in shown and "A secret is saved." in shown
    admin.post("/settings/feedback/mailgun", data={"mailgun-enabled": "y", "mailgun-secret": ""})
    from feedback.settings import forget_cache, provider_settings

    forget_cache()
    assert provider_settings("mailgun").secret == "key-very-secret-123"
    bad = admin.post("/settings/feedback/sendgrid", data={"sendgrid-enabled": "y", "sendgrid-public_key": "nope"})
    assert bad.status_code == 400 and "not a public key" in bad.text
    rules = admin.post("/settings/feedback/rules", data={"soft_bounce_limit": "5", "soft_bounce_days": "14"})
    assert rules.status_code == 302
    assert client_as("organizer").get("/settings/feedback/").status_code == 403


def test_list_health_shows_the_webhook_intake(app, client_as):
    """Reports waiting in the webhook intake, and any set aside after failing, are counted on the page."""
    from crm.models import FeedbackIntake

    client = client_as("analyst")
    page = " ".join(client.get("/list-health").text.split())
    assert "Every report from the relays' webhooks has been applied." in page
    db.session.add_all([FeedbackIntake(provider="ses", event_id=f"e-{n}", kind="complaint") for n in range(3)]
                       + [FeedbackIntake(provider="ses", event_id="bad", kind="bounce", failed_at=utcnow(),
                                         error="ValueError")])
    db.session.commit()
    page = " ".join(client.get("/list-health").text.split())
    assert "3 reports from the relays' webhooks waiting" in page and "1 could not be applied" in page

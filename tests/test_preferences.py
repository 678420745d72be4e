"""The preference page: signed link in every footer, details, pause (and the snapshot honouring it), unsubscribe.

CSRF is on, as in production; every change must leave a consent event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from campaigns import lifecycle, pipeline, queries
from campaigns.compose import preview
from campaigns.tokens import make_preferences_token, make_unsubscribe_token, read_preferences_token
from crm.extensions import db
from crm.models import ConsentEvent, Message, Segment, Supporter
from crm.segments import compiler
from crm.segments.rules import validate
from tests import factories

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
EVERYONE = {"type": "group", "match": "all", "rules": []}


@pytest.fixture
def app(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        yield app


@pytest.fixture
def sent(app):
    supporter = factories.make_supporter(email="jane.doe@example.org", first_name="Jane", last_name="Doe",
                                         postal_code="N1 9GU")
    return factories.make_message(factories.make_campaign(status="sent"), supporter)


def url(message) -> str:
    return f"/preferences/{make_preferences_token(message.id)}"


def post(client, message, **data):
    page = client.get(url(message))
    assert page.status_code == 200
    return client.post(url(message), data={"csrf_token": CSRF_FIELD.search(page.text).group(1), **data})


def events(supporter_id: int) -> list[ConsentEvent]:
    return list(db.session.scalars(db.select(ConsentEvent).where(ConsentEvent.supporter_id == supporter_id)
                                   .order_by(ConsentEvent.id)))


def test_every_footer_links_the_page_and_templates_may_too(app):
    """The footer carries {{ preferences_url }} beside unsubscribe, in both parts; templates may use it."""
    campaign = factories.make_campaign(mjml=factories.DEFAULT_MJML.replace(
        "Here is our periodic update.", '<a href="{{ preferences_url }}">Your preferences</a>'))
    rendered = preview(campaign, app.config)
    assert rendered.html.count("#preferences-preview") == 2
    assert "Change your details or pause these emails: #preferences-preview" in rendered.text
    assert read_preferences_token(make_preferences_token(9)) == 9
    assert read_preferences_token(make_unsubscribe_token(9)) is None  # each link opens only its own page


def test_page_shows_details_without_login_and_private_headers(app, client, sent):
    """No login; the current details are filled in; never cached, indexed or framed."""
    page = client.get(url(sent))
    assert page.status_code == 200
    assert 'value="Jane"' in page.text and 'value="N1 9GU"' in page.text
    assert "ja***@ex***.org" in page.text and "jane.doe@example.org" not in page.text
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    assert 'name="viewport"' in page.text and "<script" not in page.text


def test_tampered_link_gets_the_unsubscribe_pages_400(app, client, sent):
    """A changed or truncated token: the same friendly 400 as the unsubscribe link, for GET and POST."""
    token = make_preferences_token(sent.id)
    unsubscribe_invalid = client.get("/u/garbage")
    for bad in (token[:-3], token + "x", make_unsubscribe_token(sent.id), "garbage"):
        for response in (client.get(f"/preferences/{bad}"), client.post(f"/preferences/{bad}", data={})):
            assert response.status_code == 400
            assert response.text == unsubscribe_invalid.text


def test_update_details_through_the_supporter_rules_with_a_consent_event(app, client, sent):
    """Names and postal code change (postal code upper-cased by the service's rules); one consent event."""
    response = post(client, sent, action="details", first_name=" Janet ", last_name="Doe", postal_code="n1 9gu ")
    assert response.status_code == 200 and "Your details are saved." in response.text
    supporter = db.session.get(Supporter, sent.supporter_id, populate_existing=True)
    assert (supporter.first_name, supporter.postal_code) == ("Janet", "N1 9GU")
    event = events(supporter.id)[-1]
    assert (event.action, event.source, event.campaign_id) == ("update_details", "preference_page", sent.campaign_id)
    assert event.wording == "Changed on the preference page: first name"
    assert supporter.email_status == "subscribed"


def test_invalid_details_are_refused_with_the_reason_and_nothing_written(app, client, sent):
    """Too long a name: 422 with the message, no change, no event."""
    before = len(events(sent.supporter_id))
    response = post(client, sent, action="details", first_name="x" * 500, last_name="Doe", postal_code="N1")
    assert response.status_code == 422 and "First name longer than 100 characters." in response.text
    supporter = db.session.get(Supporter, sent.supporter_id, populate_existing=True)
    assert supporter.first_name == "Jane" and len(events(sent.supporter_id)) == before


def test_forms_need_their_csrf_token(app, client, sent):
    """No token, or a forged one: the expired page, nothing changed."""
    client.get(url(sent))
    for data in ({"action": "pause", "days": "30"}, {"action": "unsubscribe", "csrf_token": "forged"}):
        response = client.post(url(sent), data=data)
        assert response.status_code == 400 and "Open your preferences again" in response.text
    supporter = db.session.get(Supporter, sent.supporter_id, populate_existing=True)
    assert supporter.paused_until is None and supporter.is_subscribed


def test_cross_site_post_is_refused(app, client, sent):
    """A browser's cross-site POST never acts (crm.cross_origin)."""
    response = client.post(url(sent), data={"action": "unsubscribe"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    assert db.session.get(Supporter, sent.supporter_id, populate_existing=True).is_subscribed


def test_pause_days_are_only_the_offered_ones(app, client, sent):
    """A pause of any other length is not accepted."""
    for days in ("7", "365", "-30", "x"):
        response = post(client, sent, action="pause", days=days)
        assert response.status_code == 400
    assert db.session.get(Supporter, sent.supporter_id, populate_existing=True).paused_until is None


def test_paused_supporter_left_out_of_snapshots_until_the_date(app, client, sent):
    """Pause 30 days: a consent event; the next campaign leaves them out; a snapshot after the date has them."""
    response = post(client, sent, action="pause", days="30")
    assert response.status_code == 200 and "Paused." in response.text
    supporter = db.session.get(Supporter, sent.supporter_id, populate_existing=True)
    until = supporter.paused_until if supporter.paused_until.tzinfo else supporter.paused_until.replace(tzinfo=UTC)
    assert timedelta(days=29) < until - datetime.now(UTC) <= timedelta(days=30)
    event = events(supporter.id)[-1]
    assert (event.action, event.wording, event.source) == ("pause", "Pause email updates for 30 days",
                                                            "preference_page")
    assert supporter.email_status == "subscribed"
    assert "paused until" in client.get(url(sent)).text

    other = factories.make_supporter()
    segment = Segment(name="Everyone", rules=EVERYONE)
    db.session.add(segment)
    db.session.commit()
    campaign = factories.make_campaign(segment=segment)
    assert lifecycle.estimated_recipients(campaign) == 1
    lifecycle.send_now(campaign)
    assert pipeline.start_campaign(campaign.id) == 1
    assert db.session.scalars(db.select(Message.supporter_id).where(Message.campaign_id == campaign.id)).all() \
        == [other.id]

    # The next campaign, snapshotted on a day after the pause ends: they are back by themselves.
    later = factories.make_campaign(segment=segment, status="sending")
    condition = compiler.segment_condition(validate(EVERYONE))
    assert queries.snapshot(later.id, condition, until + timedelta(minutes=1)) == 2
    db.session.rollback()


def test_resume_early(app, client, sent):
    """A paused supporter may start again at once (another consent event)."""
    post(client, sent, action="pause", days="60")
    response = post(client, sent, action="resume")
    assert "start again" in response.text
    assert db.session.get(Supporter, sent.supporter_id, populate_existing=True).paused_until is None
    assert [e.action for e in events(sent.supporter_id)][-2:] == ["pause", "pause"]


def test_unsubscribe_from_the_page(app, client, sent):
    """Through the unsubscribe service: opt_out with the page as source and the button's words; undo offered."""
    response = post(client, sent, action="unsubscribe")
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    assert "Undo: resubscribe me" in response.text
    supporter = db.session.get(Supporter, sent.supporter_id, populate_existing=True)
    assert supporter.email_status == "unsubscribed"
    event = events(supporter.id)[-1]
    assert (event.action, event.source, event.campaign_id) == ("opt_out", "preference_page", sent.campaign_id)
    assert event.wording.startswith("Unsubscribe ja***@ex***.org")
    page = client.get(url(sent)).text
    assert "You are not subscribed" in page and "Pause email updates" not in page

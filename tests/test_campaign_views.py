"""The staff campaign pages: editor, preview, template library, sender identities, test sends,
scheduling, sending through a real worker to a real SMTP server, and live progress."""

from __future__ import annotations

import email
import email.policy
import html
import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest

from campaigns import lifecycle, service
from crm.demo import load_demo_data
from crm.extensions import db
from crm.models import AuditLog, Campaign, EmailTemplate, Message, Segment, SenderIdentity
from crm.supporters.consent import record_consent
from tests import factories
from tests.factories import drain

SUBSCRIBED = {"type": "group", "match": "all", "rules": [
    {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]}]}
_names = itertools.count(1)
ERROR = re.compile(r'<p class="error" id="([\w-]+)-err" role="alert">(.*?)</p>', re.S)


@pytest.fixture
def web(make_app, smtp_server):
    """An app that sends to the real test SMTP server."""
    app = make_app(SMTP_URL=smtp_server.url, SEND_RATE_PER_SECOND=1000, SEND_RETRY_BACKOFF_SECONDS=0.01)
    with app.app_context():
        yield app


def errors(page: str) -> dict[str, str]:
    """Field id -> its error messages, as the form shows them beside the field."""
    found: dict[str, str] = {}
    for field, message in ERROR.findall(page):
        found[field] = (found.get(field, "") + " " + html.unescape(message)).strip()
    return found


def make_segment(rules=None, name=None) -> Segment:
    segment = Segment(name=name or f"Segment {next(_names)}", rules=rules or SUBSCRIBED)
    db.session.add(segment)
    db.session.commit()
    return segment


def form_data(**overrides) -> dict:
    data = {"name": "June update", "subject": "News for {{ supporter.first_name | default('friend') }}",
            "preheader": "What changed this month", "mjml": factories.DEFAULT_MJML, "text_body": "",
            "reply_to": "", "sender_id": "", "segment_id": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def ready_campaign(**overrides) -> Campaign:
    return factories.make_campaign(segment=overrides.pop("segment", None) or make_segment(), **overrides)


def parse(envelope) -> email.message.EmailMessage:
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)


# -- creating and editing ---------------------------------------------------------------------

def test_organizer_creates_a_draft_from_the_default_template(app, client_as):
    """"New campaign" opens the editor on the library's template; saving stores a draft that the list shows."""
    template = service.ensure_default_template()
    sender = factories.make_sender(name="Test Org")
    segment = make_segment(name="Asylum signers")
    client = client_as("organizer")

    listing = client.get("/campaigns/").text
    assert f'<option selected value="{template.id}">Periodic update</option>' in listing
    editor = client.get(f"/campaigns/new?template_id={template.id}").text
    assert "Your headline here" in editor and "mj-button" in editor

    response = client.post("/campaigns/new", data=form_data(
        mjml=template.mjml, sender_id=str(sender.id), segment_id=str(segment.id), track_opens="y",
        reply_to=" Replies@Example.org "))
    assert response.status_code == 302
    campaign = db.session.scalar(db.select(Campaign))
    assert response.headers["Location"].endswith(f"/campaigns/{campaign.id}")
    assert (campaign.status, campaign.name, campaign.sender_id, campaign.segment_id) == (
        "draft", "June update", sender.id, segment.id)
    assert campaign.track_opens and not campaign.track_clicks
    assert campaign.reply_to == "replies@example.org"
    assert campaign.mjml == template.mjml and campaign.text_body == ""
    listing = client.get("/campaigns/").text
    assert "June update" in listing and "badge-draft" in listing and "Asylum signers" in listing


def test_save_shows_compose_problems_beside_the_fields_and_stores_nothing(app, client_as):
    """Bad MJML (mjml's message), an unknown variable (with its line) and a header-breaking subject."""
    client = client_as("organizer")

    bad_mjml = client.post("/campaigns/new", data=form_data(mjml="<mjml><mj-body><mj-section>"))
    assert bad_mjml.status_code == 400
    assert errors(bad_mjml.text)["mjml"].startswith("MJML: unexpected end of stream")

    unknown = client.post("/campaigns/new", data=form_data(
        mjml="<mjml><mj-body><mj-section><mj-column>\n<mj-text>Hi</mj-text>\n"
             "<mj-text>{{ supporter.shoe_size }}</mj-text>\n</mj-column></mj-section></mj-body></mjml>"))
    assert unknown.status_code == 400
    message = errors(unknown.text)["mjml"]
    assert message.startswith("line 3:") and "shoe_size" in message

    injected = client.post("/campaigns/new", data=form_data(subject="Hello\r\nBcc: everyone@example.net",
                                                            name="", reply_to="not an address"))
    assert injected.status_code == 400
    found = errors(injected.text)
    assert "one line" in found["subject"]
    assert "name" in found and "reply_to" in found
    assert 'value="Hello' in injected.text  # what staff typed is kept for them to fix

    mismatched = client.post("/campaigns/new", data=form_data(
        mjml="<mjml><mj-body><mj-section><mj-column>\n<mj-text>Hi</mj-button>\n</mj-column></mj-section>"
             "</mj-body></mjml>"))
    assert mismatched.status_code == 400  # mjml-python alone would have compiled it
    assert errors(mismatched.text)["mjml"] == ("line 2: MJML: </mj-button> has no matching <mj-button>; "
                                               "<mj-text> (line 2) is still open")
    crossed = client.post("/campaigns/templates/new", data={"name": "Crossed", "mjml": (
        "<mjml><mj-body><mj-section><mj-column>\n<mj-text>Hi\n</mj-column></mj-text></mj-section></mj-body></mjml>")})
    assert crossed.status_code == 400
    assert "line 3: MJML: </mj-column> closes <mj-text> opened on line 2" in errors(crossed.text)["mjml"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Campaign)) == 0


def test_invalid_edit_leaves_the_stored_campaign_alone(app, client_as):
    """An edit with a problem changes neither the content nor the version."""
    campaign = ready_campaign()
    before = (campaign.subject, campaign.mjml, campaign.version)
    client = client_as("organizer")
    response = client.post(f"/campaigns/{campaign.id}/edit", data=form_data(
        subject="Fine", mjml="<mjml><mj-body>{{ broken </mj-body></mjml>", version=str(campaign.version)))
    assert response.status_code == 400 and "mjml" in errors(response.text)
    db.session.expire_all()
    assert (campaign.subject, campaign.mjml, campaign.version) == before


def test_editing_a_scheduled_campaign_keeps_the_schedule_for_the_new_version(app, client_as):
    """Saving bumps the version and re-arms the scheduled start under the new version's job id."""
    campaign = ready_campaign()
    lifecycle.schedule(campaign, datetime.now(UTC) + timedelta(days=2))
    old_version = campaign.version
    client = client_as("organizer")
    page = client.get(f"/campaigns/{campaign.id}/edit").text
    assert "Saving keeps the schedule" in page

    response = client.post(f"/campaigns/{campaign.id}/edit", data=form_data(
        subject="New subject", sender_id=str(campaign.sender_id), segment_id=str(campaign.segment_id),
        version=str(old_version)))
    assert response.status_code == 302
    db.session.expire_all()
    assert campaign.subject == "New subject" and campaign.status == "scheduled"
    assert campaign.version > old_version
    assert campaign.scheduled_at is not None  # the schedule is the row; the workers start it when due
    assert db.session.scalar(db.select(AuditLog).where(AuditLog.action == "campaigns.edit")).details["fields"] == [
        "name", "preheader", "subject"]


def test_a_stale_editor_cannot_overwrite_a_newer_save(app, client_as):
    """Two staff open the same version; the second save is refused with a reason, not merged."""
    campaign = ready_campaign()
    opened_on = str(campaign.version)
    first, second = client_as("organizer"), client_as("organizer")
    assert first.post(f"/campaigns/{campaign.id}/edit", data=form_data(subject="First", version=opened_on)
                      ).status_code == 302
    late = second.post(f"/campaigns/{campaign.id}/edit", data=form_data(subject="Second", version=opened_on))
    assert late.status_code == 409 and "Someone else saved this campaign" in late.text
    db.session.expire_all()
    assert campaign.subject == "First"


def test_editing_is_locked_once_sending_starts(app, client_as):
    """A sending campaign shows a locked editor and refuses a save; its page offers no Edit."""
    campaign = ready_campaign(status="sending", started_at=datetime.now(UTC))
    client = client_as("organizer")
    page = client.get(f"/campaigns/{campaign.id}/edit").text
    assert "Editing is locked" in page and "disabled" in page and "Save campaign" not in page
    response = client.post(f"/campaigns/{campaign.id}/edit", data=form_data(subject="Too late"))
    assert response.status_code == 409 and "Editing is locked once sending starts." in response.text
    db.session.expire_all()
    assert campaign.subject != "Too late"
    assert f'/campaigns/{campaign.id}/edit"' not in client.get(f"/campaigns/{campaign.id}").text


def test_duplicate_and_delete_draft_only(app, client_as):
    """Any campaign can be copied into a draft; only drafts can be deleted."""
    sent = ready_campaign(status="sent", started_at=datetime.now(UTC), finished_at=datetime.now(UTC))
    client = client_as("organizer")
    copy_response = client.post(f"/campaigns/{sent.id}/duplicate")
    copy = db.session.scalar(db.select(Campaign).where(Campaign.id != sent.id))
    assert copy_response.headers["Location"].endswith(f"/campaigns/{copy.id}/edit")
    assert (copy.status, copy.name, copy.mjml, copy.segment_id) == ("draft", f"Copy of {sent.name}", sent.mjml,
                                                                    sent.segment_id)

    refused = client.post(f"/campaigns/{sent.id}/delete", follow_redirects=True)
    assert "Only a draft can be deleted" in refused.text
    assert client.post(f"/campaigns/{copy.id}/delete").status_code == 302
    db.session.expire_all()
    assert db.session.scalars(db.select(Campaign.id)).all() == [sent.id]


def test_a_draft_named_by_a_segment_is_not_deleted(app, client_as):
    """A segment's "received campaign X" condition would otherwise point at nothing."""
    draft = ready_campaign()
    make_segment(name="Got the draft", rules={"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "engagement", "op": "received",
         "value": {"campaign_id": draft.id, "within_days": 30}}]})
    client = client_as("organizer")
    refused = client.post(f"/campaigns/{draft.id}/delete", follow_redirects=True)
    assert "Segments refer to this campaign" in refused.text and "Got the draft" in refused.text
    db.session.expire_all()
    assert db.session.get(Campaign, draft.id) is not None


# -- who may do what ----------------------------------------------------------------------------

def test_analyst_reads_but_cannot_change_or_send(app, client_as):
    """Analysts see lists, campaign pages and progress; every change or send is a 403."""
    campaign = ready_campaign()
    template = service.ensure_default_template()
    client = client_as("analyst")
    listing = client.get("/campaigns/")
    assert listing.status_code == 200 and "New campaign" not in listing.text
    page = client.get(f"/campaigns/{campaign.id}")
    assert page.status_code == 200
    assert "Send now" not in page.text and "Send a test" not in page.text and "Duplicate" not in page.text
    assert client.get(f"/campaigns/{campaign.id}/progress").status_code == 200
    assert client.get("/campaigns/templates").status_code == 200
    for method, url in [("get", f"/campaigns/{campaign.id}/edit"), ("post", f"/campaigns/{campaign.id}/send"),
                        ("post", f"/campaigns/{campaign.id}/test"), ("post", f"/campaigns/{campaign.id}/schedule"),
                        ("post", f"/campaigns/{campaign.id}/delete"), ("get", "/campaigns/new"),
                        ("get", f"/campaigns/templates/{template.id}"), ("get", "/settings/senders")]:
        assert getattr(client, method)(url).status_code == 403, url
    db.session.expire_all()
    assert campaign.status == "draft"


def test_organizer_sends_but_only_admins_manage_sender_identities(app, client_as):
    """Organizers schedule and send; the sender identity settings are the admins'."""
    campaign = ready_campaign()
    organizer = client_as("organizer")
    assert organizer.get("/settings/senders").status_code == 403
    assert organizer.post("/settings/senders", data={"name": "X", "email": "x@news.example.org"}).status_code == 403
    assert organizer.post(f"/campaigns/{campaign.id}/send").status_code == 302
    db.session.expire_all()
    assert campaign.status == "scheduled"  # queued to start now
    admin = client_as("admin")
    assert admin.get("/settings/senders").status_code == 200
    assert 'href="/settings/senders"' in admin.get("/settings/").text


# -- sender identities ---------------------------------------------------------------------------

def test_admin_adds_edits_and_deactivates_sender_identities(app, client_as):
    """Add (address normalised, duplicates refused), edit, deactivate; the editor offers active ones only."""
    admin = client_as("admin")
    added = admin.post("/settings/senders", data={"name": "Réseau Réfugiés", "email": " News@Example.ORG ",
                                                  "reply_to": "", "is_active": "y"})
    assert added.status_code == 302
    sender = db.session.scalar(db.select(SenderIdentity))
    assert (sender.name, sender.email, sender.is_active) == ("Réseau Réfugiés", "news@example.org", True)

    again = admin.post("/settings/senders", data={"name": "Other", "email": "news@example.org", "is_active": "y"})
    assert again.status_code == 400 and "already a sender identity" in errors(again.text)["email"]
    bad = admin.post("/settings/senders", data={"name": "", "email": "nope"})
    assert bad.status_code == 400 and set(errors(bad.text)) >= {"name", "email"}

    edited = admin.post(f"/settings/senders/{sender.id}", data={
        "name": "Refugee Rights", "email": "news@example.org", "reply_to": "team@example.org", "is_active": "y"})
    assert edited.status_code == 302
    db.session.expire_all()
    assert (sender.name, sender.reply_to) == ("Refugee Rights", "team@example.org")
    assert "Refugee Rights &lt;news@example.org&gt;" in admin.get("/campaigns/new").text

    assert admin.post(f"/settings/senders/{sender.id}/deactivate").status_code == 302
    db.session.expire_all()
    assert sender.is_active is False
    assert "&lt;news@example.org&gt;" not in admin.get("/campaigns/new").text


def test_sender_in_use_by_a_scheduled_campaign_cannot_be_deactivated(app, client_as):
    """A scheduled campaign would fail at its start time without its identity, so it is kept."""
    campaign = ready_campaign()
    lifecycle.schedule(campaign, datetime.now(UTC) + timedelta(days=1))
    admin = client_as("admin")
    page = admin.post(f"/settings/senders/{campaign.sender_id}/deactivate", follow_redirects=True).text
    assert "Not deactivated" in page
    edit = admin.post(f"/settings/senders/{campaign.sender_id}", data={
        "name": "Test Org", "email": campaign.sender.email})  # the box unticked
    assert edit.status_code == 400 and "is_active" in errors(edit.text)
    db.session.expire_all()
    assert campaign.sender.is_active is True


# -- preview ------------------------------------------------------------------------------------

def test_preview_escapes_supporter_values_and_returns_no_script(app, client_as):
    """Rendered as a supporter whose name is markup: escaped in the HTML, nothing executable returned."""
    person = factories.make_supporter(first_name="<script>alert(1)</script>",
                                      last_name='"><img src=x onerror=alert(2)>')
    client = client_as("organizer")
    body = {"name": "x", "subject": "Hi {{ supporter.first_name }}", "preheader": "",
            "mjml": "<mjml><mj-body><mj-section><mj-column><mj-text>Dear {{ supporter.full_name }}</mj-text>"
                    "</mj-column></mj-section></mj-body></mjml>", "text_body": "", "supporter_id": person.id}
    response = client.post("/campaigns/preview", json=body)
    assert response.status_code == 200
    data = response.get_json()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in data["html"]
    assert "<script" not in data["html"].lower() and "<img src=x" not in data["html"]
    assert data["subject"] == "Hi <script>alert(1)</script>"  # a header, shown as text by the page
    assert "Dear <script>alert(1)</script>" in data["text"]  # plain text is not HTML
    assert "1 Test Street" in data["html"] and "#unsubscribe-preview" in data["html"]  # the footer is there

    sample = client.post("/campaigns/preview", json={**body, "supporter_id": None}).get_json()
    assert "Dear Amina Haddad" in sample["html"]


def test_preview_reports_problems_and_refuses_malformed_requests(app, client_as):
    """Problems come back by field with lines; a body that is not the editor's JSON is a 400."""
    client = client_as("organizer")
    problems = client.post("/campaigns/preview", json={
        "subject": "Hi {{ supporter.nickname }}", "mjml": "<mjml><mj-body>\n{% if %}</mj-body></mjml>"}
    ).get_json()["problems"]
    assert "nickname" in problems["subject"][0]
    assert problems["mjml"][0].startswith("line 2:")
    assert client.post("/campaigns/preview", data="nope").status_code == 400
    assert client.post("/campaigns/preview", json={"mjml": ["a list"]}).status_code == 400


def test_saved_preview_page_has_a_strict_policy(app, client_as):
    """The iframe's page forbids scripts (CSP sandbox, no script-src) and escapes supporter values."""
    person = factories.make_supporter(first_name="<b>Bold</b>")
    campaign = ready_campaign(mjml="<mjml><mj-body><mj-section><mj-column><mj-text>{{ supporter.first_name }}"
                                   "</mj-text><mj-raw><script>alert(1)</script></mj-raw></mj-column></mj-section>"
                                   "</mj-body></mjml>")
    response = client_as("analyst").get(f"/campaigns/{campaign.id}/preview?supporter_id={person.id}")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy and "script-src" not in policy
    assert "&lt;b&gt;Bold&lt;/b&gt;" in response.text


def test_supporter_search_for_the_preview_picker(app, client_as):
    """Addresses starting with the query, case-insensitively; LIKE wildcards are taken literally."""
    ana = factories.make_supporter(email="ana.lopez@example.net", first_name="Ana", last_name="López")
    factories.make_supporter(email="bob@example.net")
    client = client_as("organizer")
    assert client.get("/campaigns/supporters?q=ANA.").get_json()["supporters"] == [
        {"id": ana.id, "email": "ana.lopez@example.net", "name": "Ana López"}]
    assert client.get("/campaigns/supporters?q=%25%25").get_json()["supporters"] == []
    assert client.get("/campaigns/supporters?q=a").get_json()["supporters"] == []


# -- template library ---------------------------------------------------------------------------

def test_template_library_validates_mjml_on_save(app, client_as):
    """Add shows mjml's own message for broken markup; then edit and delete."""
    client = client_as("organizer")
    form = client.get("/campaigns/templates/new").text
    assert "Your headline here" in form  # starts from the default
    bad = client.post("/campaigns/templates/new", data={"name": "Broken", "mjml": "<mjml><mj-body><mj-section>"})
    assert bad.status_code == 400 and "unexpected end of stream" in errors(bad.text)["mjml"]
    assert db.session.scalar(db.select(db.func.count()).select_from(EmailTemplate)) == 0

    good = client.post("/campaigns/templates/new", data={"name": "Petition win", "mjml": factories.DEFAULT_MJML})
    assert good.status_code == 302
    template = db.session.scalar(db.select(EmailTemplate))
    assert "Petition win" in client.get("/campaigns/templates").text
    dup = client.post("/campaigns/templates/new", data={"name": "Petition win", "mjml": factories.DEFAULT_MJML})
    assert "already exists" in errors(dup.text)["name"]

    assert client.post(f"/campaigns/templates/{template.id}", data={
        "name": "Petition won", "mjml": factories.DEFAULT_MJML}).status_code == 302
    db.session.expire_all()
    assert template.name == "Petition won"
    assert client.post(f"/campaigns/templates/{template.id}/delete").status_code == 302
    assert db.session.scalar(db.select(db.func.count()).select_from(EmailTemplate)) == 0


# -- schedule ---------------------------------------------------------------------------------

def test_schedule_in_the_organisations_zone_then_unschedule(make_app):
    """09:30 in London in July is 08:30 UTC; the page shows it back in London time; unschedule drafts it."""
    app = make_app(ORG_TIMEZONE="Europe/London")
    with app.app_context():
        campaign = ready_campaign()
        client = factories.signed_in_client(app, "organizer")
        page = client.get(f"/campaigns/{campaign.id}").text
        assert "Send at (Europe/London time)" in page

        response = client.post(f"/campaigns/{campaign.id}/schedule", data={"send_at": "2031-07-01T09:30"})
        assert response.status_code == 302
        db.session.expire_all()
        assert campaign.status == "scheduled"
        assert campaign.scheduled_at.replace(tzinfo=UTC) == datetime(2031, 7, 1, 8, 30, tzinfo=UTC)
        page = client.get(f"/campaigns/{campaign.id}").text
        assert "2031-07-01 09:30 BST" in page and 'value="2031-07-01T09:30"' in page
        assert "2031-07-01 09:30 BST" in client.get("/campaigns/").text

        assert client.post(f"/campaigns/{campaign.id}/unschedule").status_code == 302
        db.session.expire_all()
        assert (campaign.status, campaign.scheduled_at) == ("draft", None)

        gap = client.post(f"/campaigns/{campaign.id}/schedule", data={"send_at": "2031-03-30T01:30"})
        assert gap.status_code == 400 and "does not exist in Europe/London" in errors(gap.text)["send_at"]
        past = client.post(f"/campaigns/{campaign.id}/schedule", data={"send_at": "2020-01-01T09:00"})
        assert past.status_code == 400 and "in the future" in errors(past.text)["send_at"]
        db.session.expire_all()
        assert campaign.status == "draft"


def test_campaign_that_is_not_ready_says_why(app, client_as):
    """No segment: the page and the confirm step say so, and sending is refused."""
    campaign = factories.make_campaign()
    client = client_as("organizer")
    assert "Not ready to send: Choose a segment to send to." in client.get(f"/campaigns/{campaign.id}").text
    confirm = client.get(f"/campaigns/{campaign.id}/send").text
    assert "It cannot be sent yet" in confirm and "Send now to" not in confirm
    page = client.post(f"/campaigns/{campaign.id}/send", follow_redirects=True).text
    assert "Not sent. Choose a segment to send to." in page


# -- test sends and sending for real ----------------------------------------------------------------

def test_test_send_reaches_smtp_marked_test_and_creates_no_messages(web, smtp_server):
    """A test goes to the staff address through a real worker, [TEST] in the subject, no message rows."""
    campaign = ready_campaign(subject="Hello {{ supporter.first_name | default('friend') }}")
    client = factories.signed_in_client(web, "organizer")
    page = client.get(f"/campaigns/{campaign.id}").text
    assert f'value="{client.user.email}"' in page  # the current user's address by default

    stranger = client.post(f"/campaigns/{campaign.id}/test", data={"addresses": "someone@example.net"})
    assert stranger.status_code == 400 and "staff accounts only" in errors(stranger.text)["addresses"]
    response = client.post(f"/campaigns/{campaign.id}/test", data={"addresses": client.user.email.upper()})
    assert response.status_code == 302
    drain(web)

    assert [env.rcpt_tos for env in smtp_server.handler.envelopes] == [[client.user.email]]
    message = parse(smtp_server.handler.envelopes[0])
    assert message["Subject"] == "[TEST] Hello Amina"
    assert db.session.scalar(db.select(db.func.count()).select_from(Message)) == 0
    db.session.expire_all()
    assert campaign.status == "draft" and campaign.sent_count == 0


def test_send_now_delivers_to_subscribed_segment_members_only(web, smtp_server):
    """Confirm shows the estimate; a burst worker sends to each subscribed signer once, nobody else."""
    petition = factories.make_petition(title="Safe routes")
    signers = [factories.make_supporter() for _ in range(3)]
    left = factories.make_supporter()
    never = factories.make_supporter(subscribed=False)
    for person in (*signers, left, never):
        factories.make_signature(petition, person)
    record_consent(left, "opt_out", "test")
    factories.make_supporter()  # subscribed, did not sign
    db.session.commit()
    segment = make_segment({"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]},
        {"type": "condition", "field": "petitions", "op": "any_of", "value": {"petition_ids": [petition.id]}}]})
    campaign = ready_campaign(segment=segment)
    client = factories.signed_in_client(web, "organizer")

    confirm = client.get(f"/campaigns/{campaign.id}/send").text
    assert '<strong id="confirm-estimate">3</strong>' in confirm and "Send now to 3 supporters" in confirm
    assert client.post(f"/campaigns/{campaign.id}/send").status_code == 302
    drain(web)

    recipients = sorted(rcpt for env in smtp_server.handler.envelopes for rcpt in env.rcpt_tos)
    assert recipients == sorted(s.email for s in signers)
    db.session.expire_all()
    assert (campaign.status, campaign.sent_count, campaign.total) == ("sent", 3, 3)
    progress = client.get(f"/campaigns/{campaign.id}/progress").get_json()
    assert (progress["status"], progress["sent"], progress["total"], progress["failed"]) == ("sent", 3, 3, 0)
    page = client.get(f"/campaigns/{campaign.id}").text
    assert "badge-sent" in page and "data-live" not in page and "Send now" not in page
    assert "3 / 3" in client.get("/campaigns/").text


def test_progress_and_problem_lists_while_sending(app, client_as):
    """Live counts as JSON; failed and unknown messages listed with masked addresses, unknowns explained."""
    campaign = ready_campaign(status="sending", started_at=datetime.now(UTC))
    people = [factories.make_supporter(email=f"person{n}@example.net") for n in range(6)]
    now = datetime.now(UTC)
    for person, status in zip(people, ["sent", "sent", "failed", "unknown", "queued", "suppressed"], strict=True):
        factories.make_message(campaign, person, status=status, sent_at=now if status == "sent" else None,
                               error={"failed": "550 mailbox unavailable", "unknown": "worker stopped"}.get(status, ""))
    client = client_as("analyst")

    data = client.get(f"/campaigns/{campaign.id}/progress").get_json()
    assert {k: data[k] for k in ("status", "total", "sent", "failed", "unknown", "suppressed", "queued")} == {
        "status": "sending", "total": 6, "sent": 2, "failed": 1, "unknown": 1, "suppressed": 1, "queued": 1}
    assert data["rate_per_minute"] == 2 and data["eta_seconds"] == 30

    page = client.get(f"/campaigns/{campaign.id}").text
    assert "data-live" in page and 'data-p="sent">2<' in page
    assert "p***@example.net" in page and "person2@example.net" not in page
    assert "550 mailbox unavailable" in page and "never resent automatically" in page


def test_a_finished_campaign_reports_its_average_rate(app, client_as):
    start = datetime.now(UTC) - timedelta(minutes=10)
    campaign = ready_campaign(status="sent", started_at=start, finished_at=start + timedelta(seconds=30))
    for _ in range(4):
        factories.make_message(campaign, factories.make_supporter(), status="sent", sent_at=start)
    data = client_as("analyst").get(f"/campaigns/{campaign.id}/progress").get_json()
    assert (data["status"], data["sent"], data["rate_per_minute"], data["eta_seconds"]) == ("sent", 4, 8, 0)


def test_pause_resume_and_cancel_from_the_page(app, client_as):
    """Pause records why; resume clears it; cancel asks first, then stops the campaign for good."""
    campaign = ready_campaign(status="sending", started_at=datetime.now(UTC))
    factories.make_message(campaign, factories.make_supporter(), status="queued")
    client = client_as("organizer")
    assert client.post(f"/campaigns/{campaign.id}/pause").status_code == 302
    page = client.get(f"/campaigns/{campaign.id}").text
    assert "badge-paused" in page and "Paused by staff." in page and "Resume" in page
    assert client.post(f"/campaigns/{campaign.id}/resume").status_code == 302
    db.session.expire_all()
    assert campaign.status == "sending"

    confirm = client.get(f"/campaigns/{campaign.id}/cancel").text
    assert "never will be" in confirm and "Cancel the campaign" in confirm
    db.session.expire_all()
    assert campaign.status == "sending"  # the GET only asks
    assert client.post(f"/campaigns/{campaign.id}/cancel").status_code == 302
    db.session.expire_all()
    assert campaign.status == "cancelled"
    assert db.session.scalar(db.select(Message.status).where(Message.campaign_id == campaign.id)) == "cancelled"


def test_demo_data_offers_a_draft_campaign_ready_to_send(app, client_as):
    """`make run`'s demo: a sender from MAIL_FROM, the default template, a segment and a ready draft."""
    load_demo_data(supporters=20)
    campaign = db.session.scalar(db.select(Campaign))
    assert campaign.status == "draft"
    assert (campaign.sender.name, campaign.sender.email) == ("Test Org", "updates@news.example.org")
    client = client_as("organizer")
    page = client.get(f"/campaigns/{campaign.id}").text
    assert "Not ready" not in page and 'id="estimate"' in page
    assert "Your signature is making a difference" in client.get(f"/campaigns/{campaign.id}/preview").text
    assert service.DEFAULT_TEMPLATE_NAME in client.get("/campaigns/templates").text


def test_send_now_shows_starting_until_a_worker_takes_it(app, client_as):
    """Right after Send now the page says "starting" with no Unschedule or Send now; then "sending"."""
    factories.make_supporter()
    campaign = ready_campaign()
    client = client_as("admin")
    assert client.post(f"/campaigns/{campaign.id}/send").status_code == 302
    db.session.expire_all()
    assert campaign.status == "scheduled" and campaign.started_at is None  # no worker has run yet
    page = client.get(f"/campaigns/{campaign.id}").text
    assert '<span class="badge badge-starting">starting</span>' in page and 'id="starting-note"' in page
    for gone in ("Unschedule", "Send now…", ">Edit</a>", "Send a test", "Scheduled for"):
        assert gone not in page
    assert "Cancel campaign…" in page
    assert '<span class="badge badge-starting">starting</span>' in client.get("/campaigns/").text
    drain(app)
    page = client.get(f"/campaigns/{campaign.id}").text
    assert "badge-starting" not in page and "starting-note" not in page


def test_a_later_schedule_still_reads_scheduled(app):
    """Scheduled for the future is "scheduled"; only a due one that no worker took is "starting"."""
    campaign = ready_campaign(status="scheduled", scheduled_at=datetime.now(UTC) + timedelta(hours=2))
    assert service.shown_status(campaign) == "scheduled"
    assert service.shown_status(campaign, now=datetime.now(UTC) + timedelta(hours=3)) == "starting"


def test_campaign_page_shows_the_subject_as_the_preview_renders_it(app, client_as):
    """The campaign page and list show the subject for the sample supporter, the template beneath."""
    campaign = ready_campaign(subject='{{ supporter.first_name | default("Friend") }}, news from {{ org.name }}')
    client = client_as("analyst")
    page = client.get(f"/campaigns/{campaign.id}").text
    assert '<span id="campaign-subject">Amina, news from Test Org</span>' in page
    assert "the template is <code>{{ supporter.first_name" in page
    listing = client.get("/campaigns/").text
    assert "Amina, news from Test Org" in listing and "{{ supporter" not in listing


def test_unsubscribe_on_the_timeline_names_its_campaign(app, client_as):
    """An opt_out from a message's link shows the campaign it came from, linked."""
    campaign = ready_campaign(name="Spring appeal", status="sent")
    supporter = factories.make_supporter()
    record_consent(supporter, "opt_out", "unsubscribe_link", campaign_id=campaign.id)
    db.session.commit()
    page = client_as("analyst").get(f"/supporters/{supporter.id}").text
    timeline = page[page.index("Consent timeline"):page.index("Messages</h2>")]
    assert f'from the campaign <a href="/campaigns/{campaign.id}">Spring appeal</a>' in timeline

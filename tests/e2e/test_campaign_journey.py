"""A campaign from start to finish in a real browser: compose from the default template with the
live preview, test-send, schedule and unschedule, send now to a segment, watch it finish, and
read the delivered message from the dev outbox (a real SMTP server) with its required headers."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from campaigns import service
from crm.extensions import db
from crm.models import Campaign, Message, Segment
from crm.outbox import store
from crm.supporters.consent import record_consent
from tests import factories
from tests.e2e.test_journey import sign_in
from workers.run import run_worker

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ZONE = "Europe/London"


@pytest.fixture
def live_app(outbox_app):
    """The e2e app (CSRF on), sending to the outbox, scheduling in London time (ZONE)."""
    return outbox_app


def run_jobs(app) -> None:
    """What `crm dev`'s worker would do, here and now: run every queued job, then stop."""
    db.session.commit()
    run_worker(app, burst=True, with_scheduler=False)
    db.session.expire_all()


def test_staff_compose_preview_test_schedule_and_send_a_campaign(live_app, live_server, page, outbox_dir,
                                                                  screenshot_dir):
    """The issue's browser journey, ending with a delivered message that carries RFC 8058 headers and the footer."""
    organizer = factories.make_staff("organizer")
    factories.make_sender(name="Test Org", email="news@news.example.org")
    service.ensure_default_template()
    petition = factories.make_petition(title="Safe routes now")
    signers = [factories.make_supporter(email=f"signer{n}@example.net", first_name=name)
               for n, name in enumerate(["Zoë", "Kemi"])]
    gone = factories.make_supporter(email="gone@example.net")
    for person in (*signers, gone):
        factories.make_signature(petition, person)
    record_consent(gone, "opt_out", "test")
    db.session.add(Segment(name="Safe routes signers", rules={"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "petitions", "op": "any_of", "value": {"petition_ids": [petition.id]}}]}))
    db.session.commit()

    sign_in(page, live_server, organizer.email)
    page.goto(f"{live_server}/campaigns/")
    expect(page.get_by_label("Start from")).to_have_value(re.compile(r"\d+"))  # the default template
    page.get_by_role("button", name="New campaign").click()
    expect(page.locator("h1")).to_have_text("New campaign")
    preview = page.frame_locator("#preview-frame")
    expect(preview.get_by_text("Your headline here")).to_be_visible()
    expect(preview.get_by_text("1 Test Street, London N1 1AA", exact=False)).to_be_visible()  # the footer

    page.get_by_label("Name (for staff)").fill("Safe routes: we won")
    page.get_by_label("Subject").fill('Good news, {{ supporter.first_name | default("friend") }}')
    page.get_by_label("From (sender identity)").select_option(label="Test Org <news@news.example.org>")
    page.get_by_label("Send to segment").select_option(label="Safe routes signers")
    expect(page.locator("#preview-subject")).to_have_text("Good news, Amina")  # the sample supporter

    body = page.locator("#mjml")
    source = body.input_value()
    body.fill(source.replace("Your headline here", "{{ supporter.nickname }}"))
    problem = page.locator('.live-problems[data-field="mjml"]')
    expect(problem).to_contain_text("line ")
    expect(problem).to_contain_text("nickname")
    body.fill(source.replace("Your headline here", "We won the vote"))
    expect(preview.get_by_text("We won the vote")).to_be_visible()
    expect(problem).to_be_empty()

    page.get_by_label("Preview as supporter (search by email)").fill("signer1")
    page.get_by_role("button", name="signer1@example.net (Kemi Last", exact=False).click()
    expect(page.locator("#preview-subject")).to_have_text("Good news, Kemi")
    expect(preview.get_by_text("Dear Kemi,")).to_be_visible()
    page.get_by_role("button", name="Regenerate from HTML").click()
    expect(page.locator("#text_body")).to_have_value(re.compile("We won the vote"))
    expect(page.locator("#preview-text")).to_contain_text("Unsubscribe: #unsubscribe-preview")
    page.screenshot(path=str(screenshot_dir / "campaign-editor.png"), full_page=True)
    page.locator("#preview-frame").screenshot(path=str(screenshot_dir / "campaign-preview-frame.png"))

    page.get_by_role("button", name="Save campaign").click()
    expect(page.locator("h1")).to_contain_text("Safe routes: we won")
    expect(page.locator("#campaign-status")).to_have_text("draft")
    expect(page.locator("#estimate")).to_have_text("2")
    expect(page.frame_locator("iframe.mail-frame").get_by_text("We won the vote")).to_be_visible()
    campaign = db.session.scalar(db.select(Campaign))

    # A test to my own address (filled in for me), delivered by a worker.
    expect(page.get_by_label("Staff addresses, comma-separated")).to_have_value(organizer.email)
    page.get_by_role("button", name="Send test").click()
    expect(page.locator(".flash-success")).to_contain_text("Test queued")
    run_jobs(live_app)
    tests = store.list_messages(outbox_dir)
    assert [(t.subject, t.recipient) for t in tests] == [("[TEST] Good news, Amina", organizer.email)]
    assert db.session.scalar(db.select(db.func.count()).select_from(Message)) == 0

    # Schedule for tomorrow 09:00 London time, then think better of it.
    tomorrow = (datetime.now(ZoneInfo(ZONE)) + timedelta(days=1)).strftime("%Y-%m-%d")
    page.get_by_label(f"Send at ({ZONE} time)").fill(f"{tomorrow}T09:00")
    page.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.locator("#campaign-status")).to_have_text("scheduled")
    expect(page.locator(".flash-success")).to_contain_text(f"Scheduled for {tomorrow} 09:00")
    page.get_by_role("button", name="Unschedule").click()
    expect(page.locator("#campaign-status")).to_have_text("draft")

    # Send now: the confirm step names the count; the page follows the send without a reload.
    page.get_by_role("link", name="Send now…").click()
    expect(page.locator("#confirm-estimate")).to_have_text("2")
    page.get_by_role("button", name="Send now to 2 supporters").click()
    expect(page.locator(".flash-success")).to_contain_text("Sending has started.")
    expect(page.locator("#progress")).to_be_visible()
    run_jobs(live_app)
    expect(page.locator("#campaign-status")).to_have_text("sent", timeout=15_000)
    expect(page.locator('[data-p="sent"]')).to_have_text("2")
    expect(page.locator("#finished-at")).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "campaign-sent.png"), full_page=True)
    db.session.expire_all()
    assert (campaign.status, campaign.sent_count) == ("sent", 2)

    # The delivered messages, as the outbox stored them byte for byte.
    delivered = [m for m in store.list_messages(outbox_dir) if not m.subject.startswith("[TEST]")]
    assert sorted(m.recipient for m in delivered) == ["signer0@example.net", "signer1@example.net"]
    message = next(m for m in delivered if m.recipient == "signer0@example.net").message
    assert message["Subject"] == "Good news, Zoë"
    assert re.fullmatch(r"<https://crm\.example\.org/u/[A-Za-z0-9_.\-]+>", message["List-Unsubscribe"].split(",")[0])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = message["List-Unsubscribe"].split(",")[0].strip("<>")
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "1 Test Street, London N1 1AA" in html and "We won the vote" in html
    assert re.search(rf'<a href="{re.escape(unsubscribe)}"[^>]*>Unsubscribe</a>', html)
    assert f"Unsubscribe: {unsubscribe}" in text and "1 Test Street, London N1 1AA" in text

    # Staff can read the same message in the outbox.
    page.goto(f"{live_server}/outbox/")
    page.get_by_role("link", name="Good news, Zoë").click()
    expect(page.locator("table.headers")).to_contain_text("List-Unsubscribe-Post")

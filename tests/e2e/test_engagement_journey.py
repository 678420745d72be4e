"""Engagement in a real browser: a tracked campaign read from the dev outbox (the pixel loads, a link is
clicked and lands on the real page) and counted on the campaign page; double opt-in from the public
sign form to the confirmed subscription."""

from __future__ import annotations

import pytest

from campaigns import lifecycle
from crm.extensions import db
from crm.models import Campaign, Segment, SignatureConfirmation, Supporter
from crm.outbox import store
from tests import factories
from tests.e2e.test_journey import sign_in
from tracking.flush import flush
from workers.run import run_worker

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

# A desktop Chrome's agent: headless Chromium says "HeadlessChrome", which the tracking (rightly) takes
# for a scanner.
READER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36")


@pytest.fixture
def live_app(outbox_app):
    return outbox_app


@pytest.fixture
def reader(browser, screenshot_dir):
    """A page in a Chromium that introduces itself as a desktop Chrome everywhere, sandboxed mail frames
    included (a context's user_agent option does not reach the requests of a sandboxed srcdoc frame)."""
    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, DEFAULT_TIMEOUT_MS

    own = browser.browser_type.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--user-agent={READER_AGENT}"])
    context = own.new_context()
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    yield context.new_page()
    context.close()
    own.close()


def run_jobs(app) -> None:
    db.session.commit()
    run_worker(app, burst=True, with_scheduler=False)
    db.session.expire_all()


def test_tracked_campaign_opened_and_clicked_from_the_outbox(live_app, live_server, reader, outbox_dir,
                                                             screenshot_dir):
    """Tracking switched on in the editor; the delivered message opened in the outbox loads the pixel; its
    link, clicked, lands on the real page; after the flush the campaign page counts one human open and
    one human click."""
    live_app.config["BASE_URL"] = live_server  # the links in the mail must reach this server
    organizer = factories.make_staff("organizer")
    petition = factories.make_petition(title="Safe routes now")
    real_url = f"{live_server}/p/{petition.slug}/embed"
    factories.make_supporter(email="reader@example.net", first_name="Zoë")
    segment = Segment(name="Everyone", rules={"type": "group", "match": "all", "rules": []})
    db.session.add(segment)
    db.session.commit()
    campaign = factories.make_campaign(segment=segment, name="Tracked update", subject="News for you", mjml=(
        "<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ supporter.first_name }}, "
        f'<a href="{real_url}">read the story</a>.</mj-text></mj-column></mj-section></mj-body></mjml>'))

    page = reader
    sign_in(page, live_server, organizer.email)
    page.goto(f"{live_server}/campaigns/{campaign.id}/edit")
    expect(page.get_by_text("invisible 1×1 image", exact=False)).to_be_visible()
    page.get_by_label("Track opens").check()
    page.get_by_label("Track clicks").check()
    page.get_by_role("button", name="Save campaign").click()
    expect(page.locator("h1")).to_contain_text("Tracked update")
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    assert campaign.track_opens and campaign.track_clicks
    lifecycle.send_now(campaign)
    run_jobs(live_app)

    [delivered] = store.list_messages(outbox_dir)
    html = delivered.message.get_body(("html",)).get_content()
    assert f'href="{real_url}"' not in html and f"{live_server}/c/" in html and f"{live_server}/o/" in html

    page.goto(f"{live_server}/outbox/")
    page.get_by_role("link", name="News for you").click()
    mail = page.frame_locator("iframe.mail-frame")
    # Loaded means our server answered with the GIF (Playwright reports no requests of a sandboxed srcdoc frame).
    expect(mail.locator('img[width="1"]')).to_have_js_property("naturalWidth", 1)
    mail.get_by_role("link", name="read the story").click()
    expect(mail.get_by_role("heading", name="Safe routes now")).to_be_visible()
    assert any(frame.url == real_url for frame in page.frames)
    page.screenshot(path=str(screenshot_dir / "tracking-clicked-in-outbox.png"), full_page=True)

    flush()  # what the workers do every two seconds
    page.goto(f"{live_server}/campaigns/{campaign.id}")
    opens, clicks = page.locator("#engagement-opens"), page.locator("#engagement-clicks")
    expect(opens.locator('[data-e="unique_human"]')).to_have_text("1")
    expect(opens.locator('[data-e="total_all"]')).to_have_text("1")
    expect(clicks.locator('[data-e="unique_human"]')).to_have_text("1")
    expect(clicks.locator('[data-e="total_human"]')).to_have_text("1")
    page.screenshot(path=str(screenshot_dir / "tracking-campaign-counts.png"), full_page=True)


def test_double_opt_in_from_sign_form_to_confirmed(live_app, live_server, make_page, outbox_dir, screenshot_dir):
    """A signer of a double opt-in petition is counted but not subscribed, listed as waiting; the mailed link
    opens a page whose button subscribes them; the petition page no longer lists them."""
    live_app.config["BASE_URL"] = live_server
    organizer = factories.make_staff("organizer")
    petition = factories.make_petition(title="Safe routes now", double_opt_in=True)

    phone = make_page(viewport={"width": 390, "height": 844}, user_agent=READER_AGENT)
    phone.goto(f"{live_server}/p/{petition.slug}")
    phone.get_by_label("Email").fill("grace@example.net")
    phone.get_by_label("First name").fill("Grace")
    phone.get_by_role("button", name="Sign").click()
    expect(phone.get_by_role("status")).to_contain_text("Thank you")
    run_jobs(live_app)
    grace = db.session.scalars(db.select(Supporter).where(Supporter.email == "grace@example.net")).one()
    assert grace.email_status == "never_subscribed"

    staff = make_page()
    sign_in(staff, live_server, organizer.email)
    staff.goto(f"{live_server}/petitions/{petition.id}")
    expect(staff.locator("#pending-confirmations")).to_contain_text("grace@example.net")

    [mail] = store.list_messages(outbox_dir)
    assert mail.recipient == "grace@example.net" and mail.subject.startswith("Please confirm")
    staff.goto(f"{live_server}/outbox/")
    staff.get_by_role("link", name=mail.subject).click()
    button = staff.frame_locator("iframe.mail-frame").get_by_role("link", name="Confirm my email updates")
    link = button.get_attribute("href")
    assert link.startswith(f"{live_server}/confirm/")

    phone.goto(link)  # the signer follows the link from their own mail
    expect(phone.locator("h1")).to_have_text("Confirm your email updates")
    phone.get_by_role("button", name="Yes, send me email updates").click()
    expect(phone.locator("#confirmed")).to_contain_text("You will receive periodic email updates")
    phone.screenshot(path=str(screenshot_dir / "double-opt-in-confirmed.png"), full_page=True)
    phone.goto(link)
    expect(phone.locator("h1")).to_have_text("You have already confirmed")

    db.session.expire_all()
    assert db.session.get(Supporter, grace.id).email_status == "subscribed"
    assert db.session.scalars(db.select(SignatureConfirmation)).one().confirmed_at is not None
    staff.goto(f"{live_server}/petitions/{petition.id}")
    expect(staff.get_by_text("Waiting for confirmation (0)")).to_be_visible()

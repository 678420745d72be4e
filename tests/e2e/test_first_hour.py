"""A new organisation's first hour, in Chromium at desktop and phone sizes: what a staffer and a
supporter meet -- honest consent through an import, the embed snippet, the sign form, Settings,
a first campaign through the outbox and an unsubscribe from it, and pages that fit the screen."""

from __future__ import annotations

import re

import pytest

from campaigns import service as campaigns
from crm.extensions import db
from crm.models import Campaign, ConsentEvent, OrgSettings, Segment, Supporter
from crm.outbox import store
from crm.settings import org
from tests import factories
from tests.e2e.test_campaign_journey import run_jobs
from tests.e2e.test_journey import sign_in

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 812}}


@pytest.fixture
def live_app(outbox_app):
    """The e2e app, sending to the dev outbox."""
    return outbox_app


@pytest.fixture(params=list(SIZES))
def screen(request, make_page):
    """(a page at this size, the size's name); the phone one is a touch device."""
    phone = request.param == "phone"
    page = make_page(viewport=SIZES[request.param], is_mobile=phone, has_touch=phone)
    return page, request.param


def fits(page) -> None:
    """Nothing sticks out sideways: the page scrolls only up and down."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "page overflows sideways"


def test_import_records_the_files_assertion_not_a_ticked_box(live_app, live_server, screen, tmp_path,
                                                              screenshot_dir):
    """Signed a checkbox petition without consent, then imported with "yes": the timeline says the file asserted it."""
    page, size = screen
    petition = factories.make_petition(title="Clean rivers", consent_mode="checkbox",
                                       consent_wording="Yes, send me updates about clean rivers.")
    page.goto(f"{live_server}/p/{petition.slug}")
    page.get_by_label("Email").fill("dara@example.net")
    page.get_by_label("First name").fill("Dara")
    expect(page.get_by_label("Yes, send me updates about clean rivers.")).not_to_be_checked()
    page.get_by_role("button", name="Sign").click()
    expect(page.get_by_text("Thank you: your signature has been added.")).to_be_visible()

    organizer = factories.make_staff("organizer")
    sign_in(page, live_server, organizer.email)
    csv_file = tmp_path / "stall-signups.csv"
    csv_file.write_text("Email,First name,Consent\ndara@example.net,Dara,yes\nole@example.net,Ole,ja\n"
                        "eve@example.net,Eve,2\n", encoding="utf-8")
    page.goto(f"{live_server}/imports/new")
    page.get_by_label("CSV or XLSX file").set_input_files(str(csv_file))
    page.get_by_role("button", name=re.compile("Upload")).click()
    expect(page.locator("h1")).to_contain_text("Map columns of stall-signups.csv")
    page.get_by_label("Add as signatures of petition").select_option(label="Clean rivers")
    page.get_by_label("Record the petition's consent wording for opted-in rows").check()
    page.get_by_role("button", name="Update preview").click()
    plan = page.locator("#consent-plan")
    expect(plan).to_contain_text("Consent asserted by the imported file “stall-signups.csv”, column “Consent”")
    expect(plan).to_contain_text("what the organisation says the person was shown")
    expect(page.get_by_text("kept; consent not recorded: “2” is not a yes or a no")).to_be_visible()
    fits(page)
    page.screenshot(path=str(screenshot_dir / f"first-hour-import-map-{size}.png"), full_page=True)
    page.get_by_role("button", name="Import", exact=True).click()
    run_jobs(live_app)
    page.reload()
    expect(page.locator("#consent-unrecognised")).to_contain_text("1 row kept without recording consent")
    expect(page.locator("#consent-unrecognised")).to_contain_text("“2” (1 row)")

    dara = db.session.scalar(db.select(Supporter).filter_by(email="dara@example.net"))
    page.goto(f"{live_server}/supporters/{dara.id}")
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("opt in via import:")
    expect(timeline).to_contain_text("The organisation says this wording was shown (not by this system):")
    expect(timeline).to_contain_text("Evidence: Consent asserted by the imported file “stall-signups.csv”, "
                                     "column “Consent”, value “yes”; not given on a form of this system.")
    expect(timeline).not_to_contain_text("Wording version")
    fits(page)
    page.screenshot(path=str(screenshot_dir / f"first-hour-timeline-{size}.png"), full_page=True)
    statuses = dict(db.session.execute(db.select(Supporter.email, Supporter.email_status)).all())
    assert statuses == {"dara@example.net": "subscribed", "ole@example.net": "subscribed",
                        "eve@example.net": "never_subscribed"}


def test_public_page_text_first_countries_by_name_and_long_names_refused(live_server, screen, screenshot_dir):
    """Text before the form; country a select by name starting on the org's; 101 letters refused."""
    page, size = screen
    db.session.add(OrgSettings(id=1, country="IE"))
    db.session.commit()
    org.forget()
    petition = factories.make_petition(title="Safe routes", body="We ask for safe routes.\n\nMore: the details.")
    page.goto(f"{live_server}/p/{petition.slug}")
    text_box = page.locator("#petition-text").bounding_box()
    form_box = page.locator("form.sign").bounding_box()
    assert text_box["y"] + text_box["height"] <= form_box["y"], "the text must come before the form"
    expect(page.get_by_text("More: the details.")).to_be_hidden()
    page.get_by_text("Read more").click()
    expect(page.get_by_text("More: the details.")).to_be_visible()
    country = page.get_by_label("Country")
    expect(country).to_have_value("IE")
    expect(country.locator("option:checked")).to_have_text("Ireland")
    fits(page)
    page.screenshot(path=str(screenshot_dir / f"first-hour-petition-{size}.png"), full_page=True)

    long_name = "Wolfeschlegelsteinhausenbergerdorff" * 3  # 105 letters
    page.get_by_label("Email").fill("long@example.net")
    page.get_by_label("First name").fill(long_name)
    assert len(page.get_by_label("First name").input_value()) == len(long_name)  # not cut by the browser
    country.select_option(label="Germany")
    page.get_by_role("button", name="Sign").click()
    expect(page.get_by_text("First name longer than 100 characters.")).to_be_visible()
    expect(page.get_by_label("First name")).to_have_value(long_name)
    expect(page.get_by_label("Country")).to_have_value("DE")
    assert db.session.scalar(db.select(db.func.count()).select_from(Supporter)) == 0
    page.get_by_label("First name").fill("Hubert")
    page.get_by_role("button", name="Sign").click()
    expect(page.get_by_text("1 person has signed so far.")).to_be_visible()
    assert db.session.scalar(db.select(Supporter.country)) == "DE"


def test_staff_pages_fit_and_the_embed_snippet_is_safe(live_server, screen, screenshot_dir):
    """One line of navigation at 1280 px, long names wrap in the supporter table, the snippet keeps a hostile title."""
    page, size = screen
    admin = factories.make_staff("admin", email="a.very.long.staff.address.indeed@staff.example.org")
    factories.make_supporter(first_name="Maximilian" * 10, last_name="Oppenheimer-Wittgenstein" * 4,
                             email=("x" * 60) + "@example.net")
    hostile = 'Stop "this" now" onload="alert(1)" <b>'
    petition = factories.make_petition(title=hostile)
    sign_in(page, live_server, admin.email)
    nav_links = page.get_by_role("navigation", name="Main").get_by_role("link")
    if size == "desktop":
        tops = [box["y"] for box in (nav_links.nth(i).bounding_box() for i in range(nav_links.count()))]
        assert len(set(tops)) == 1, f"the navigation wraps: {tops}"
        assert page.locator(".topbar").bounding_box()["height"] < 60
    page.goto(f"{live_server}/supporters/")
    fits(page)
    table = page.locator(".table-wrap").first
    assert table.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), "the supporter table overflows"
    page.screenshot(path=str(screenshot_dir / f"first-hour-supporters-{size}.png"), full_page=True)

    page.goto(f"{live_server}/petitions/{petition.id}")
    snippet = page.locator("#embed-snippet").input_value()
    parsed = page.evaluate("""(html) => {
        const box = document.createElement('div'); box.innerHTML = html;
        const frames = box.querySelectorAll('iframe');
        return {count: box.children.length, frames: frames.length,
                attrs: frames.length ? frames[0].getAttributeNames().sort() : [],
                title: frames.length ? frames[0].getAttribute('title') : null};
    }""", snippet)
    assert parsed == {"count": 1, "frames": 1, "attrs": ["height", "src", "style", "title", "width"],
                      "title": hostile}
    fits(page)


def test_settings_then_a_first_campaign_through_the_outbox_and_an_unsubscribe(live_app, live_server, screen,
                                                                               outbox_dir, screenshot_dir):
    """The demo address is a banner until Settings replace it; Send now shows "starting"; the mail carries the
    new address; unsubscribing from it shows on the timeline with the campaign linked."""
    page, size = screen
    db.session.add(OrgSettings(id=1, postal_address=org.DEMO_POSTAL_ADDRESS))
    db.session.commit()
    org.forget()
    admin = factories.make_staff("admin")
    campaigns.ensure_default_template()
    reader = factories.make_supporter(email="reader@example.net", first_name="Noor")
    segment = Segment(name="Everyone subscribed", rules={"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]}]})
    db.session.add(segment)
    db.session.commit()
    campaign = factories.make_campaign(name="First update", segment=segment,
                                       subject='{{ supporter.first_name | default("Friend") }}, our first update')

    sign_in(page, live_server, admin.email)
    banner = page.locator(".org-banner")
    expect(banner).to_contain_text("still the demo placeholder")
    banner.get_by_role("link", name="Set the postal address in Settings").click()
    page.get_by_label("Postal address (printed in every message's footer)").fill("7 Harbour Lane\nCork T12 X70A")
    page.get_by_role("button", name="Save organisation settings").click()
    expect(page.locator(".flash-success")).to_contain_text("Organisation settings saved")
    expect(page.locator(".org-banner")).to_have_count(0)
    fits(page)
    page.screenshot(path=str(screenshot_dir / f"first-hour-settings-{size}.png"), full_page=True)

    page.goto(f"{live_server}/campaigns/{campaign.id}")
    expect(page.locator("#campaign-subject")).to_have_text("Amina, our first update")
    page.get_by_role("link", name="Send now…").click()
    page.get_by_role("button", name="Send now to 1 supporter").click()
    expect(page.locator("#campaign-status")).to_have_text("starting")
    expect(page.get_by_role("button", name="Unschedule")).to_have_count(0)
    expect(page.get_by_role("link", name="Send now…")).to_have_count(0)
    fits(page)
    page.screenshot(path=str(screenshot_dir / f"first-hour-starting-{size}.png"), full_page=True)
    run_jobs(live_app)
    expect(page.locator("#campaign-status")).to_have_text("sent", timeout=15_000)

    (delivered,) = [m for m in store.list_messages(outbox_dir) if m.recipient == "reader@example.net"]
    assert delivered.subject == "Noor, our first update"
    html = delivered.message.get_body(("html",)).get_content()
    assert "7 Harbour Lane" in html and org.DEMO_POSTAL_ADDRESS not in html
    link = re.search(r'<a href="(https://crm\.example\.org/u/[^"]+)"[^>]*>Unsubscribe</a>', html).group(1)
    visitor = page.context.browser.new_context(viewport=SIZES[size]).new_page()
    visitor.goto(live_server + link.removeprefix("https://crm.example.org"))
    visitor.get_by_role("button", name=re.compile("^Unsubscribe")).click()
    expect(visitor.get_by_text("You will not receive them any more.")).to_be_visible()
    visitor.context.close()

    page.goto(f"{live_server}/supporters/{reader.id}")
    entry = page.locator("ol.timeline li").first  # newest first
    expect(entry).to_contain_text("opt out via unsubscribe_link from the campaign First update")
    entry.get_by_role("link", name="First update").click()
    expect(page.locator("h1")).to_contain_text("First update")
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).status == "sent"
    assert db.session.scalar(db.select(ConsentEvent.campaign_id).filter_by(action="opt_out")) == campaign.id

"""Building a segment in a real browser: conditions incl. engagement, the live count follows, then save."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from crm.extensions import db
from crm.models import EngagementEvent, Segment, utcnow
from tests import factories
from tests.e2e.test_journey import sign_in

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def test_organizer_builds_and_saves_a_two_condition_segment(live_server, page, screenshot_dir):
    """Adding conditions updates the count and summary without reload; saving stores the tree."""
    organizer = factories.make_staff("organizer")
    bees = factories.make_petition(title="Save the bees")
    for n in range(3):
        factories.make_signature(bees, factories.make_supporter(subscribed=n < 2))
    factories.make_supporter()  # subscribed, signed nothing

    sign_in(page, live_server, organizer.email)
    page.goto(f"{live_server}/segments/new")
    page.get_by_label("Name").fill("Bee people")
    expect(page.locator("#segment-count")).to_have_text("4")  # empty "all": everyone

    page.get_by_role("button", name="Add condition").click()  # email status: subscribed
    expect(page.locator("#segment-count")).to_have_text("3")

    page.get_by_role("button", name="Add condition").click()
    second = page.locator("#segment-builder .builder-row").nth(1)
    second.get_by_label("Condition", exact=True).select_option("petitions")
    second.get_by_role("group", name="Petitions").get_by_label("Save the bees").check()  # a checkbox: no Ctrl-click
    expect(page.locator("#segment-count")).to_have_text("2")
    expect(page.locator("#segment-summary")).to_have_text(
        "Subscribed supporters who signed “Save the bees”")
    expect(page.locator("#segment-sample li")).to_have_count(2)
    page.screenshot(path=str(screenshot_dir / "segments-builder.png"), full_page=True)

    page.get_by_role("button", name="Save segment").click()
    expect(page.locator("h1")).to_have_text("Bee people")
    expect(page.locator(".segment-summary")).to_have_text("Subscribed supporters who signed “Save the bees”")
    expect(page).to_have_url(re.compile(r"/segments/\d+$"))
    db.session.expire_all()
    segment = db.session.scalar(db.select(Segment).where(Segment.name == "Bee people"))
    assert [rule["field"] for rule in segment.rules["rules"]] == ["email_status", "petitions"]


def test_organizer_adds_a_not_emailed_recently_condition(live_server, page, screenshot_dir):
    """An engagement condition: choosing the test redraws its fields, keeps focus, and counts follow."""
    organizer = factories.make_staff("organizer")
    update = factories.make_campaign(name="Bee update", status="sent")
    for days in (3, 20):
        factories.make_message(update, factories.make_supporter(), sent_at=utcnow() - timedelta(days=days))
    factories.make_supporter()  # never emailed

    sign_in(page, live_server, organizer.email)
    page.goto(f"{live_server}/segments/new")
    page.get_by_label("Name").fill("Quiet lately")
    expect(page.locator("#segment-count")).to_have_text("3")
    page.get_by_role("button", name="Add condition").click()
    row = page.locator("#segment-builder .builder-row").first
    row.get_by_label("Condition", exact=True).select_option("engagement")  # was sent, in the last 30 days
    expect(page.locator("#segment-summary")).to_have_text("Supporters who were emailed in the last 30 days")
    expect(page.locator("#segment-count")).to_have_text("2")
    test = row.get_by_label("Test", exact=True)
    test.select_option("not_received")
    expect(row.get_by_label("Test", exact=True)).to_be_focused()
    expect(page.locator("#segment-count")).to_have_text("1")
    row.get_by_label("In the last … days (optional)").fill("14")
    expect(page.locator("#segment-count")).to_have_text("2")
    expect(page.locator("#segment-summary")).to_have_text("Supporters who have not been emailed in the last 14 days")
    row.get_by_label("Campaign", exact=True).select_option(label="Bee update")
    expect(page.locator("#segment-summary")).to_have_text(
        "Supporters who did not receive “Bee update” in the last 14 days")
    page.screenshot(path=str(screenshot_dir / "segments-engagement.png"), full_page=True)

    page.get_by_role("button", name="Save segment").click()
    expect(page.locator("h1")).to_have_text("Quiet lately")
    db.session.expire_all()
    segment = db.session.scalar(db.select(Segment).where(Segment.name == "Quiet lately"))
    assert segment.rules["rules"] == [{"type": "condition", "field": "engagement", "op": "not_received",
                                       "value": {"within_days": 14, "campaign_id": update.id}}]


def test_organizer_leaves_machine_opens_out(live_server, page, screenshot_dir):
    """The "people only" box on an opened test: an open only an image proxy made stops counting."""
    organizer = factories.make_staff("organizer")
    update = factories.make_campaign(name="Bee update", status="sent")
    for machine in (False, True):
        message = factories.make_message(update, factories.make_supporter(), sent_at=utcnow() - timedelta(days=2))
        db.session.add(EngagementEvent(message_id=message.id, supporter_id=message.supporter_id,
                                       campaign_id=update.id, kind="open", is_machine=machine,
                                       created_at=utcnow() - timedelta(days=1)))
    db.session.commit()

    sign_in(page, live_server, organizer.email)
    page.goto(f"{live_server}/segments/new")
    page.get_by_label("Name").fill("Real readers")
    page.get_by_role("button", name="Add condition").click()
    row = page.locator("#segment-builder .builder-row").first
    row.get_by_label("Condition", exact=True).select_option("engagement")
    row.get_by_label("Test", exact=True).select_option("opened")
    expect(page.locator("#segment-count")).to_have_text("2")
    row.get_by_label("People only (leave out image proxies and link scanners)").check()
    expect(page.locator("#segment-count")).to_have_text("1")
    expect(page.locator("#segment-summary")).to_have_text(
        "Supporters who opened a campaign email in the last 30 days (people, not machines)")
    row.get_by_label("Test", exact=True).select_option("not_opened")  # the box stays ticked
    expect(row.get_by_label("People only (leave out image proxies and link scanners)")).to_be_checked()
    expect(page.locator("#segment-count")).to_have_text("1")
    page.get_by_role("button", name="Save segment").click()
    expect(page.locator("h1")).to_have_text("Real readers")
    db.session.expire_all()
    segment = db.session.scalar(db.select(Segment).where(Segment.name == "Real readers"))
    assert segment.rules["rules"][0]["value"] == {"people_only": True, "within_days": 30}


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 375, "height": 812}],
                         ids=["desktop", "phone"])
def test_multiple_choices_are_checkboxes_with_a_filter(live_server, make_page, screenshot_dir, viewport):
    """Statuses, tags and countries are ticked one by one (no Ctrl-click); a long list filters as you type."""
    organizer = factories.make_staff("organizer")
    factories.make_supporter(country="FR")
    factories.make_supporter(country="GB")
    factories.make_supporter(country="DE", subscribed=False)
    page = make_page(viewport=viewport, is_mobile=viewport["width"] < 500, has_touch=viewport["width"] < 500)

    sign_in(page, live_server, organizer.email)
    page.goto(f"{live_server}/segments/new")
    page.get_by_label("Name").fill("Neighbours")
    page.get_by_role("button", name="Add condition").click()  # email status: subscribed
    row = page.locator("#segment-builder .builder-row").first
    statuses = row.get_by_role("group", name="Statuses")
    expect(statuses.get_by_label("subscribed", exact=True)).to_be_checked()
    statuses.get_by_label("never subscribed").check()
    expect(page.locator("#segment-count")).to_have_text("3")
    expect(page.locator("#segment-noun")).to_have_text("supporters match")

    page.get_by_role("button", name="Add condition").click()
    second = page.locator("#segment-builder .builder-row").nth(1)
    second.get_by_label("Condition", exact=True).select_option("country")
    countries = second.get_by_role("group", name="Countries")
    countries.get_by_label("Filter Countries").fill("fran")
    expect(countries.get_by_label("France")).to_be_visible()
    expect(countries.get_by_label("Germany")).to_be_hidden()
    countries.get_by_label("France").check()
    expect(page.locator("#segment-count")).to_have_text("1")
    expect(page.locator("#segment-noun")).to_have_text("supporter matches")
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    page.screenshot(path=str(screenshot_dir / f"segments-checklists-{viewport['width']}.png"), full_page=True)
    page.get_by_role("button", name="Save segment").click()
    expect(page.locator("h1")).to_have_text("Neighbours")
    db.session.expire_all()
    segment = db.session.scalar(db.select(Segment).where(Segment.name == "Neighbours"))
    assert segment.rules["rules"][1]["value"] == ["FR"]

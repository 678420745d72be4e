"""Reports in a real browser with JavaScript off: the dashboard's charts and a campaign report's
clicks per link are drawn, carry their numbers, fetch nothing from elsewhere, and print."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from crm.extensions import db
from reports import rollups
from tests import factories
from tests.e2e.test_journey import sign_in
from tests.test_reports import STARTED, event, sent_campaign

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def test_analyst_reads_the_dashboard_and_a_campaign_report(live_app, live_server, make_page, screenshot_dir):
    """Charts are SVG drawn by the server; the busier link's bar is the longer; nothing leaves 127.0.0.1."""
    campaign, _, messages = sent_campaign(4, name="Winter update")
    for n, message in enumerate(messages):
        event(message, "open", STARTED + timedelta(hours=n + 1))
        event(message, "click", STARTED + timedelta(hours=n + 2), url="https://example.org/petition")
    event(messages[0], "click", STARTED + timedelta(hours=3), url="https://example.org/donate")
    db.session.commit()
    rollups.refresh()
    analyst = factories.make_staff("analyst")

    page = make_page(java_script_enabled=False)
    hosts = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname))
    sign_in(page, live_server, analyst.email)
    page.goto(f"{live_server}/reports/")
    expect(page.locator("#freshness")).to_contain_text("Figures as of")
    for chart in ("#chart-subscribed", "#chart-growth", "#chart-signatures"):
        svg = page.locator(f"{chart} svg")
        expect(svg).to_be_visible()
        assert svg.bounding_box()["height"] > 100
    # The numbers beside each chart: a year of weeks folds away, and opens with no script.
    expect(page.locator("#chart-growth table")).to_be_hidden()
    page.locator("#chart-growth summary").click()
    expect(page.locator("#chart-growth table")).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "reports-dashboard.png"), full_page=True)

    page.get_by_role("link", name="Winter update").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Winter update")
    expect(page.locator('[data-figure="clicks_unique_human"]')).to_contain_text("4")
    expect(page.locator("#chart-hours svg polyline")).to_have_count(4)
    bars = page.locator("#chart-links svg rect")
    expect(bars).to_have_count(2)
    petition_bar, donate_bar = bars.nth(0).bounding_box(), bars.nth(1).bounding_box()
    assert petition_bar["width"] > 2 * donate_bar["width"]  # 4 clicks against 1
    expect(page.locator("#campaign-links")).to_contain_text("https://example.org/donate")
    page.emulate_media(media="print")
    expect(page.locator("#chart-links svg")).to_be_visible()
    expect(page.locator("nav[aria-label=Main]")).to_be_hidden()
    page.screenshot(path=str(screenshot_dir / "reports-campaign-print.png"), full_page=True)
    assert hosts == {"127.0.0.1"}

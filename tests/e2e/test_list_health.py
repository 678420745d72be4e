"""List health in a real browser: the complaint-rate chart is drawn against the 0.1% and 0.3%
lines, bars sit above or below them as their rates say, and the campaign pages warn."""

from __future__ import annotations

import pytest

from crm.models import utcnow
from feedback.apply import apply_feedback
from feedback.types import Feedback
from tests import factories
from tests.e2e.test_journey import sign_in
from tests.feedback_fixtures import ref, sent_message

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def campaign_with(name: str, sent: int, complaints: int):
    campaign = factories.make_campaign(name=name, status="sent", started_at=utcnow(), sent_count=sent)
    for n in range(complaints):
        person = factories.make_supporter()
        message = sent_message(person, campaign=campaign)
        apply_feedback(Feedback(provider="sendgrid", kind="complaint", event_id=f"{name}-{n}", address=person.email,
                                message_ref=ref(message)))
    return campaign


def test_list_health_draws_complaint_rates_against_the_thresholds(live_server, page, screenshot_dir):
    """0.05%, 0.2% and 0.4% campaigns: green under both lines, amber between, red above the limit."""
    calm = campaign_with("March update", 2000, 1)
    warned = campaign_with("April update", 1000, 2)
    over = campaign_with("May update", 1000, 4)
    analyst = factories.make_staff("analyst")
    sign_in(page, live_server, analyst.email)

    page.goto(f"{live_server}/list-health")
    chart = page.locator("#complaint-chart")
    expect(chart).to_be_visible()
    warn_line = chart.locator('line[data-threshold="0.001"]')
    limit_line = chart.locator('line[data-threshold="0.003"]')
    expect(warn_line).to_have_count(1)
    expect(limit_line).to_have_count(1)

    def top(locator) -> float:
        return locator.bounding_box()["y"]

    bars = {c.id: chart.locator(f'rect[data-campaign="{c.id}"]') for c in (calm, warned, over)}
    warn_y, limit_y = top(warn_line), top(limit_line)
    assert limit_y < warn_y  # the 0.3% line is drawn higher than the 0.1% one
    assert top(bars[calm.id]) > warn_y  # 0.05%: under the warning line
    assert limit_y < top(bars[warned.id]) < warn_y  # 0.2%: between the lines
    assert top(bars[over.id]) < limit_y  # 0.4%: above the limit
    assert "level-over" in bars[over.id].get_attribute("class")
    expect(page.locator("#campaign-health")).to_contain_text("0.400%")
    page.screenshot(path=str(screenshot_dir / "list-health.png"), full_page=True)

    page.goto(f"{live_server}/campaigns/")
    banner = page.locator("#complaint-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("May update")
    expect(banner).to_contain_text("0.40%")
    page.goto(f"{live_server}/")
    expect(page.locator("#health-line")).to_contain_text("spam complaints")

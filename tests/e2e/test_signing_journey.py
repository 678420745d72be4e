"""A supporter signs a public petition in a real browser: thank-you page, the count, no cookie."""

from __future__ import annotations

import pytest

from crm.extensions import db
from crm.models import ConsentEvent, Signature, Supporter
from tests import factories

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def test_supporter_signs_a_petition(live_server, page, screenshot_dir):
    """Fill the form, press Sign: thanked, counted, and recorded with consent proof; twice is harmless."""
    petition = factories.make_petition(title="Safe routes now", goal=10, thank_you_message="Please share it.")
    factories.make_signature(petition, factories.make_supporter())
    slug, wording = petition.slug, petition.consent_wording

    page.goto(f"{live_server}/p/{slug}")
    expect(page.locator("h1")).to_have_text("Safe routes now")
    expect(page.locator("p.count strong")).to_have_text("1")
    expect(page.locator("p.wording")).to_have_text(wording)
    page.get_by_label("Email").fill("Grace@Example.net")
    page.get_by_label("First name").fill("Grace")
    page.get_by_label("Country").select_option(label="United Kingdom")
    page.get_by_role("button", name="Sign").click()
    expect(page.get_by_role("status")).to_have_text("Thank you: your signature has been added.")
    expect(page.get_by_text("Please share it.")).to_be_visible()
    expect(page.get_by_text("people have signed so far")).to_contain_text("2")
    page.screenshot(path=str(screenshot_dir / "signing-thanks.png"), full_page=True)

    page.wait_for_timeout(1100)  # the browser may keep the page for its max-age (PUBLIC_PAGE_CACHE_SECONDS, 1)
    page.goto(f"{live_server}/p/{slug}")
    expect(page.locator("p.count strong")).to_have_text("2")
    page.get_by_label("Email").fill("grace@example.net")
    page.get_by_label("First name").fill("Grace")
    page.get_by_role("button", name="Sign").click()
    expect(page.get_by_role("status")).to_contain_text("You had already signed this petition")

    db.session.expire_all()
    supporter = db.session.scalar(db.select(Supporter).where(Supporter.email == "grace@example.net"))
    assert supporter.email_status == "subscribed" and supporter.country == "GB"
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)
                             .where(Signature.supporter_id == supporter.id)) == 1
    (event,) = db.session.scalars(db.select(ConsentEvent).where(ConsentEvent.supporter_id == supporter.id)).all()
    assert event.action == "opt_in" and event.wording == wording and event.ip == "127.0.0.1"
    assert page.context.cookies() == []  # the public pages set none

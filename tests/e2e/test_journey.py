"""A staff member's first minutes in a real browser: sign in, walk the nav, and on a phone."""

from __future__ import annotations

import re

import pytest

from tests import factories

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SECTIONS = [
    "Dashboard",
    "Supporters",
    "Petitions",
    "Segments",
    "Campaigns",
    "Reports",
    "Settings",
    "Outbox",
]
TOPBAR_BACKGROUND = "rgb(23, 50, 79)"  # .topbar's #17324f: proof app.css loaded


def sign_in(page, base_url: str, email: str, password: str = factories.PASSWORD) -> None:
    page.goto(f"{base_url}/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def main_nav(page):
    return page.get_by_role("navigation", name="Main")


def test_admin_signs_in_and_visits_every_section(live_server, page, screenshot_dir):
    admin = factories.make_staff("admin")

    sign_in(page, live_server, admin.email)
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator(".topbar")).to_have_css("background-color", TOPBAR_BACKGROUND)
    expect(page.locator(".who")).to_contain_text(admin.email)

    for section in SECTIONS:
        link = main_nav(page).get_by_role("link", name=section, exact=True)
        link.click()
        expect(page.locator("h1")).to_have_text(section)
        expect(page).to_have_title(re.compile(rf"^{section} · "))
        expect(link).to_have_attribute("aria-current", "page")
        page.screenshot(path=str(screenshot_dir / f"journey-{section.lower()}.png"), full_page=True)


def test_phone_menu_reaches_supporters(live_server, make_page, screenshot_dir):
    admin = factories.make_staff("admin")
    page = make_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)

    sign_in(page, live_server, admin.email)
    expect(page.locator("h1")).to_have_text("Dashboard")
    supporters = main_nav(page).get_by_role("link", name="Supporters", exact=True)
    expect(supporters).to_be_hidden()

    page.locator("label[for='nav-toggle']").click()
    expect(supporters).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "phone-menu-open.png"), full_page=True)

    supporters.click()
    expect(page.locator("h1")).to_have_text("Supporters")
    expect(page.locator("label[for='nav-toggle']")).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "phone-supporters.png"), full_page=True)


def test_wrong_password_is_refused(live_server, page, screenshot_dir):
    admin = factories.make_staff("admin")

    sign_in(page, live_server, admin.email, password="not-the-password")
    expect(page.get_by_text("do not match")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.locator(".topbar")).to_have_count(0)
    page.screenshot(path=str(screenshot_dir / "login-wrong-password.png"), full_page=True)

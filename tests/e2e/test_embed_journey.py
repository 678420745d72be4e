"""The embed inside a partner's page on another site, in a real browser: it signs; a forged post does not.

The partner's page comes from its own server, addressed as http://localhost:<port> while the
app is http://127.0.0.1:<port>: another host, so another site, and Chromium applies its real
cross-site rules (the frame gets no first-party cookies; every request says where it came
from in Sec-Fetch-Site). Both are on the loopback interface, which Chromium's local-network
protection requires of a page that frames or posts to a loopback address.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crm.extensions import db
from crm.models import Signature, Supporter
from tests import factories

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@pytest.fixture
def partner_site():
    """A web server for another site: set `.html`, then open `.url`."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = server.html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.html = ""
    server.url = f"http://localhost:{server.server_port}/"
    thread = threading.Thread(target=server.serve_forever, name="e2e-partner-site", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def requests_to(page, base_url: str) -> list:
    """The requests the page sends to `base_url` from now on, as Playwright saw them."""
    seen = []
    page.on("request", lambda request: seen.append(request) if request.url.startswith(base_url) else None)
    return seen


def fetch_site(request) -> str:
    return request.all_headers().get("sec-fetch-site")


def test_embed_signs_inside_a_page_from_another_site(live_server, partner_site, page, screenshot_dir):
    """Framed by another site, the embed's own form posts same-origin and signs; thanks show in the frame."""
    petition = factories.make_petition(title="Safe routes now", goal=10)
    slug = petition.slug
    partner_site.html = f"""<!doctype html><title>Partner</title><h1>Our partner's campaign</h1>
        <iframe src="{live_server}/p/{slug}/embed" width="600" height="900" title="Petition"></iframe>"""
    sent = requests_to(page, live_server)

    page.goto(partner_site.url)
    frame = page.frame_locator("iframe[title=Petition]")
    expect(frame.locator("h1")).to_have_text("Safe routes now")
    frame.get_by_label("Email").fill("embed@example.net")
    frame.get_by_label("First name").fill("Em")
    frame.get_by_role("button", name="Sign").click()
    expect(frame.get_by_role("status")).to_have_text("Thank you: your signature has been added.")
    page.screenshot(path=str(screenshot_dir / "embed-on-partner-site.png"), full_page=True)

    framed = next(r for r in sent if r.url == f"{live_server}/p/{slug}/embed")
    assert fetch_site(framed) == "cross-site"  # the partner's page asked for the frame...
    (post,) = [r for r in sent if r.method == "POST"]
    assert post.url == f"{live_server}/p/{slug}/embed/sign"
    assert fetch_site(post) == "same-origin"  # ...but the frame's own page sent the form
    db.session.expire_all()
    supporter = db.session.scalar(db.select(Supporter).where(Supporter.email == "embed@example.net"))
    assert supporter is not None
    assert db.session.scalar(db.select(Signature.source).where(Signature.supporter_id == supporter.id)) == "embed"


def test_a_form_on_another_site_cannot_sign_for_its_visitor(live_server, partner_site, page):
    """A hostile page that posts our sign form gets the form back with a 403 and records nothing."""
    petition = factories.make_petition(title="Safe routes now")
    partner_site.html = f"""<!doctype html><title>Win a prize</title>
        <form method="post" action="{live_server}/p/{petition.slug}/sign">
          <input name="email" value="victim@example.net"><input name="first_name" value="Victim">
          <button>Claim your prize</button></form>"""
    sent = requests_to(page, live_server)

    page.goto(partner_site.url)
    with page.expect_response(f"{live_server}/p/{petition.slug}/sign") as answer:
        page.get_by_role("button", name="Claim your prize").click()
    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text("sent to us from a page on another website")
    expect(page.get_by_label("Email")).to_have_value("victim@example.net")  # shown, for the visitor to judge
    assert fetch_site(sent[0]) == "cross-site"
    db.session.expire_all()
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)) == 0

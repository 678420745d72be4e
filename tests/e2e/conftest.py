"""Browser tests: the real app on a real port, driven by Debian's Chromium through Playwright.

`live_app` is an app (CSRF on, outbox on) with its context pushed in the test thread, so
factories work; `live_server` serves it on 127.0.0.1 from a daemon thread and yields the base
URL. `browser` is one headless Chromium per session; `page` is a fresh context per test, and
`make_page(**context_options)` gives more (a phone viewport, say). Screenshots go to
test-output/e2e/ at the repo root; a failing test leaves one there named after itself.

Playwright never downloads a browser here: the tests use /usr/bin/chromium and skip, saying
why, when it or the playwright package is missing.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from crm.extensions import db

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "test-output" / "e2e"
DEFAULT_TIMEOUT_MS = 5_000


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item so `make_page` can screenshot failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


@pytest.fixture
def live_app(make_app):
    app = make_app(WTF_CSRF_ENABLED=True, OUTBOX_ENABLED=True)
    with app.app_context():
        yield app
        # Hand the test thread's connection back before make_app empties the tables.
        db.session.remove()


@pytest.fixture
def outbox_dir(tmp_path):
    return str(tmp_path / "outbox")


@pytest.fixture
def outbox(outbox_dir):
    """The dev outbox: aiosmtpd on 127.0.0.1 storing every message in a Maildir."""
    from crm.outbox.server import start_outbox

    controller = start_outbox(outbox_dir)
    yield controller
    controller.stop()


@pytest.fixture
def outbox_app(make_app, outbox, outbox_dir):
    """An e2e app (CSRF on) that sends to the outbox, scheduling in London time; a module that
    sends mail makes it its `live_app`."""
    app = make_app(WTF_CSRF_ENABLED=True, OUTBOX_ENABLED=True, OUTBOX_DIR=outbox_dir, ORG_TIMEZONE="Europe/London",
                   SMTP_URL=f"smtp://127.0.0.1:{outbox.port}", SEND_RATE_PER_SECOND=1000)
    with app.app_context():
        yield app
        db.session.remove()


@pytest.fixture
def live_server(live_app):
    server = make_server("127.0.0.1", 0, live_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="e2e-live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Chromium not installed: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not importable: pip install -e '.[dev]'")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def make_page(browser, screenshot_dir, request):
    """make_page(viewport={...}, ...) -> a page in a new browser context, closed after the test."""
    contexts = []

    def build(**context_options):
        context = browser.new_context(**context_options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield build
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for n, context in enumerate(contexts):
        if failed:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
            for m, page in enumerate(context.pages):
                path = screenshot_dir / f"FAILED-{name}-{n}{m}.png"
                page.screenshot(path=str(path), full_page=True)
        context.close()


@pytest.fixture
def page(make_page):
    return make_page()

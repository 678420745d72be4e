"""Public petition pages and signing: supporters, signatures and consent proof, and abuse guards."""

import re
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from werkzeug.datastructures import MultiDict

from crm.database import is_postgres
from crm.extensions import db
from crm.models import ConsentEvent, ConsentWording, Petition, Signature, Supporter
from crm.petitions import service
from crm.public import pages
from crm.public.forms import SignForm, quick_signature_data
from crm.supporters.consent import record_consent
from crm.supporters.suppression import suppress
from tests import factories

IP = "203.0.113.7"
UA = "Mozilla/5.0 (Test) Signer"


def sign(client, petition, headers=None, **overrides):
    data = {"email": "Ada@Example.NET", "first_name": "Ada", "last_name": "Lovelace",
            "postal_code": "N1 1AA", "country": "gb", "comment": "Yes!", "website": ""}
    data.update(overrides)
    return client.post(f"/p/{petition.slug}/sign", data=data,
                       environ_base={"REMOTE_ADDR": IP}, headers={"User-Agent": UA, **(headers or {})})


def count(model, **filters):
    return db.session.scalar(db.select(db.func.count()).select_from(model).filter_by(**filters))


def events_for(supporter):
    return db.session.scalars(db.select(ConsentEvent).filter_by(supporter_id=supporter.id)
                              .order_by(ConsentEvent.id)).all()


def test_open_petition_page_shows_form_and_promise(app, client):
    """/p/<slug> shows title, addressee, count, the form, the honeypot and the wording; no staff nav."""
    petition = factories.make_petition(title="Safe routes", addressed_to="The Minister", goal=10)
    factories.make_signature(petition, factories.make_supporter())
    response = client.get(f"/p/{petition.slug}")
    assert response.status_code == 200
    page = response.text
    assert "Safe routes" in page and "To: The Minister" in page
    assert "<strong>1</strong> signature ·" in page and "width: 10%" in page
    assert f'action="/p/{petition.slug}/sign"' in page
    assert petition.consent_wording in page
    assert 'aria-hidden="true"' in page and 'name="website"' in page and 'tabindex="-1"' in page
    assert '<nav aria-label="Main">' not in page and "public.css" in page
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"


@pytest.mark.parametrize("status", ["closed", "archived"])
def test_closed_petition_says_so_without_form(app, client, status):
    """Closed and archived petitions say so and show no form; signing them records nothing."""
    petition = factories.make_petition(status=status)
    page = client.get(f"/p/{petition.slug}").text
    assert f"This petition is {status}" in page and "<form" not in page
    assert sign(client, petition).status_code == 409
    assert count(Signature) == 0 and count(Supporter) == 0


def test_draft_and_unknown_petitions_are_404(app, client):
    """Drafts are invisible to the public, as are unknown slugs."""
    petition = factories.make_petition(status="draft")
    assert client.get(f"/p/{petition.slug}").status_code == 404
    assert client.get(f"/p/{petition.slug}/embed").status_code == 404
    assert sign(client, petition).status_code == 404
    assert client.get("/p/nothing-here").status_code == 404


def test_new_signer_becomes_subscribed_supporter_with_proof(app, client):
    """Signing creates the supporter, the signature and an opt_in event with wording, IP and UA."""
    petition = factories.make_petition(thank_you_message="Thanks, share it please.")
    response = sign(client, petition)
    assert response.status_code == 200 and "Thanks, share it please." in response.text
    supporter = db.session.scalar(db.select(Supporter))
    assert supporter.email == "ada@example.net" and supporter.email_status == "subscribed"
    assert (supporter.first_name, supporter.last_name, supporter.postal_code, supporter.country) == (
        "Ada", "Lovelace", "N1 1AA", "GB")
    signature = db.session.scalar(db.select(Signature))
    assert signature.supporter_id == supporter.id and signature.comment == "Yes!"
    (event,) = events_for(supporter)
    wording = db.session.scalar(db.select(ConsentWording).filter_by(petition_id=petition.id))
    assert event.action == "opt_in" and event.source == f"petition:{petition.slug}"
    assert event.wording == petition.consent_wording and event.wording_id == wording.id
    assert event.wording_version == 1 and event.ip == IP and event.user_agent == UA


def test_signing_twice_records_one_signature(app, client):
    """A second signature by the same address (any case) is harmless and says so."""
    petition = factories.make_petition()
    sign(client, petition)
    response = sign(client, petition, email="  ADA@example.net ")
    assert response.status_code == 200 and "You had already signed" in response.text
    assert count(Signature) == 1 and count(Supporter) == 1 and count(ConsentEvent) == 1


def test_case_different_email_finds_existing_supporter(app, client):
    """An existing supporter is found by normalised email, not duplicated."""
    existing = factories.make_supporter(email="ada@example.net")
    sign(client, factories.make_petition(), email="ADA@EXAMPLE.NET")
    assert count(Supporter) == 1
    assert db.session.scalar(db.select(Signature.supporter_id)) == existing.id


def test_signing_fills_blanks_but_never_overwrites(app, client):
    """Known fields are kept (never blanked or replaced); empty ones are filled from the form."""
    factories.make_supporter(email="ada@example.net", first_name="Augusta", last_name="King",
                             postal_code="", country="")
    sign(client, factories.make_petition(), first_name="Ada", last_name="", postal_code="E1 6AN",
         country="FR")
    supporter = db.session.scalar(db.select(Supporter))
    assert (supporter.first_name, supporter.last_name, supporter.postal_code, supporter.country) == (
        "Augusta", "King", "E1 6AN", "FR")


def test_checkbox_mode_unticked_signs_without_consent(app, client):
    """Checkbox mode, box left empty: the signature counts, consent is untouched."""
    petition = factories.make_petition(consent_mode="checkbox", consent_wording="Tick for updates.")
    page = client.get(f"/p/{petition.slug}").text
    assert re.search(r'<input id="consent" name="consent" type="checkbox" value="y">', page)
    sign(client, petition)
    supporter = db.session.scalar(db.select(Supporter))
    assert count(Signature) == 1 and supporter.email_status == "never_subscribed"
    assert events_for(supporter) == []


def test_checkbox_mode_ticked_opts_in(app, client):
    """Checkbox mode, box ticked: opt_in with the checkbox wording and mode."""
    petition = factories.make_petition(consent_mode="checkbox", consent_wording="Tick for updates.")
    sign(client, petition, consent="y")
    supporter = db.session.scalar(db.select(Supporter))
    (event,) = events_for(supporter)
    assert supporter.email_status == "subscribed" and event.wording == "Tick for updates."


def test_unsubscribed_supporter_resubscribes_on_implied_sign(app, client):
    """Someone who left and signs an implied-consent petition is resubscribed, with a new event."""
    supporter = factories.make_supporter(email="ada@example.net")
    record_consent(supporter, "opt_out", "unsubscribe_link")
    db.session.commit()
    sign(client, factories.make_petition())
    db.session.refresh(supporter)
    assert supporter.email_status == "subscribed"
    assert [e.action for e in events_for(supporter)] == ["opt_in", "opt_out", "resubscribe"]


def test_complained_supporter_is_not_resubscribed(app, client):
    """A spam complaint outranks an implied opt-in: the signature counts, status stays."""
    supporter = factories.make_supporter(email="ada@example.net")
    record_consent(supporter, "complaint", "feedback_loop")
    db.session.commit()
    sign(client, factories.make_petition())
    db.session.refresh(supporter)
    assert supporter.email_status == "complained" and count(Signature) == 1


def test_suppressed_address_is_never_stored_or_resubscribed(app, client):
    """A suppressed address signs anonymously: counted, but no supporter and no address kept."""
    suppress("ada@example.net")
    db.session.commit()
    petition = factories.make_petition()
    response = sign(client, petition, email="Ada@Example.net")
    assert response.status_code == 200
    assert count(Supporter) == 0 and count(ConsentEvent) == 0
    signature = db.session.scalar(db.select(Signature))
    assert signature.supporter_id is None and signature.petition_id == petition.id
    assert service.signature_count(petition) == 1


def test_wording_change_points_events_at_the_right_version(app, client, client_as):
    """After a wording edit, new consent events carry version 2 and the id of that row."""
    petition = factories.make_petition(status="open")
    sign(client, petition, email="first@example.net")
    client_as("organizer").post(f"/petitions/{petition.id}/edit", data={
        "slug": petition.slug, "title": petition.title, "goal": "100", "consent_mode": "implied",
        "consent_wording": "Version two words."})
    sign(client, petition, email="second@example.net")
    rows = {w.version: w for w in db.session.scalars(
        db.select(ConsentWording).filter_by(petition_id=petition.id))}
    first, second = db.session.scalars(db.select(ConsentEvent).order_by(ConsentEvent.id)).all()
    assert (first.wording_version, first.wording_id) == (1, rows[1].id)
    assert (second.wording_version, second.wording_id, second.wording) == (
        2, rows[2].id, "Version two words.")


def test_form_records_the_version_the_signer_saw(app, client):
    """A form loaded before a wording edit records the wording it displayed."""
    petition = factories.make_petition()
    page = client.get(f"/p/{petition.slug}").text
    assert 'name="wording_version" type="hidden" value="1"' in page
    service.save_petition({"slug": petition.slug, "title": petition.title, "goal": 10,
                           "consent_mode": "implied", "consent_wording": "Newer words."}, petition)
    sign(client, petition, wording_version="1")
    (event,) = db.session.scalars(db.select(ConsentEvent)).all()
    assert event.wording_version == 1 and event.wording == "By signing this petition you will " \
        "receive periodic email updates."


def test_honeypot_looks_like_success_and_records_nothing(app, client, caplog):
    """A filled honeypot gets the thank-you page, nothing is stored, the log has no address."""
    petition = factories.make_petition(thank_you_message="Thank you kindly.")
    with caplog.at_level("INFO"):
        response = sign(client, petition, website="http://spam.example")
    assert response.status_code == 200 and "Thank you kindly." in response.text
    assert count(Signature) == 0 and count(Supporter) == 0
    assert "honeypot" in caplog.text and "ada@example.net" not in caplog.text.lower()


def test_rate_limit_answers_429_and_keeps_the_form(make_app):
    """Over SIGN_RATE_LIMIT per IP: 429 with a clear message, every typed value still there."""
    app = make_app(SIGN_RATE_LIMIT="2/10 minutes")
    with app.app_context():
        petition = factories.make_petition()
        client = app.test_client()
        sign(client, petition, email="one@example.net")
        sign(client, petition, email="two@example.net")
        response = sign(client, petition, email="three@example.net", first_name="Grace",
                        comment="Please count me")
        assert response.status_code == 429
        assert "Too many signatures" in response.text
        assert 'value="three@example.net"' in response.text and 'value="Grace"' in response.text
        assert "Please count me" in response.text
        assert count(Signature) == 2


def test_invalid_email_is_400_with_message_beside_field(app, client):
    """A malformed address re-renders the form with the error next to the email field."""
    petition = factories.make_petition()
    response = sign(client, petition, email="not-an-address", first_name="Ada")
    assert response.status_code == 400
    assert re.search(r'id="email-err" role="alert">[^<]*@', response.text)
    assert 'value="Ada"' in response.text and count(Supporter) == 0


def test_redirect_after_signing(make_app):
    """A petition with an allowed redirect sends new signers there with 303."""
    app = make_app(SIGN_REDIRECT_HOSTS="partner.example.com")
    with app.app_context():
        petition = factories.make_petition(redirect_url="https://partner.example.com/thanks")
        response = sign(app.test_client(), petition)
        assert response.status_code == 303
        assert response.headers["Location"] == "https://partner.example.com/thanks"


@pytest.fixture
def csrf_app(make_app):
    """An app with CSRF checks on, as in production."""
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        yield app


def test_public_pages_set_no_cookie_and_may_be_cached(csrf_app):
    """The petition, embed and thank-you pages carry no token and set no cookie; caches may keep them a lifetime."""
    petition = factories.make_petition()
    client = csrf_app.test_client()
    answers = {"petition": client.get(f"/p/{petition.slug}"), "embed": client.get(f"/p/{petition.slug}/embed"),
               "thank-you": sign(client, petition), "embed thank-you": client.post(
                   f"/p/{petition.slug}/embed/sign", data={"email": "em@example.net", "first_name": "Em"})}
    for name, response in answers.items():
        assert response.status_code == 200, name
        assert response.headers.getlist("Set-Cookie") == [], name
        assert response.headers["Cache-Control"] == "public, max-age=1", name
        assert "csrf_token" not in response.text and "form_token" not in response.text, name
    assert "your signature has been added" in answers["thank-you"].text
    assert count(Signature) == 2


def test_cache_lifetime_follows_the_setting(make_app):
    """max-age is PUBLIC_PAGE_CACHE_SECONDS (bounded, like the process's own copy, by the count's lifetime)."""
    app = make_app(PUBLIC_PAGE_CACHE_SECONDS=30, SIGNATURE_COUNT_CACHE_SECONDS=60)
    with app.app_context():
        petition = factories.make_petition()
        assert app.test_client().get(f"/p/{petition.slug}").headers["Cache-Control"] == "public, max-age=30"


def test_answers_showing_typed_details_are_never_cached(csrf_app):
    """A form sent back with an error holds what someone typed: no-store, and still no cookie."""
    petition = factories.make_petition()
    response = sign(csrf_app.test_client(), petition, email="not-an-address", comment="private words")
    assert response.status_code == 400 and "private words" in response.text
    assert response.headers["Cache-Control"] == "no-store" and response.headers.getlist("Set-Cookie") == []


CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example"}


@pytest.mark.parametrize("headers", [
    CROSS_SITE,
    {"Sec-Fetch-Site": "same-site", "Origin": "https://www.crm.example.org"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://attacker.example"},  # a browser that sends no Fetch Metadata
    {"Origin": "null"},  # a sandboxed frame, or a privacy-minded redirect
    {"Origin": "http://crm.example.org"},  # BASE_URL is https: another origin
], ids=["cross-site", "same-site", "no-origin", "origin-only", "null-origin", "other-scheme"])
def test_cross_origin_post_is_refused_with_the_form_kept(csrf_app, headers):
    """A browser's POST from another site gets the form back, filled in, with a 403 saying why; nothing is kept."""
    petition = factories.make_petition()
    response = sign(csrf_app.test_client(), petition, first_name="Grace", comment="Count me in", headers=headers)
    assert response.status_code == 403
    assert "sent to us from a page on another website" in response.text and "nothing was recorded" in response.text
    assert 'value="Grace"' in response.text and "Count me in" in response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert count(Signature) == 0 and count(Supporter) == 0 and count(ConsentEvent) == 0


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "same-origin", "Origin": "https://crm.example.org"},
    {"Sec-Fetch-Site": "none"},  # the user acted directly (no page sent it)
    {"Origin": "https://crm.example.org"},  # BASE_URL's origin, from a browser without Fetch Metadata
    {"Origin": "http://localhost"},  # the origin the request was addressed to
    {},  # not a browser: curl, a script; the honeypot and the per-IP limit deal with those
], ids=["same-origin", "none", "base-url", "own-host", "no-headers"])
def test_same_origin_and_non_browser_posts_are_accepted(csrf_app, headers):
    """Posts from our own pages, typed by the user, or from no browser at all sign as usual."""
    petition = factories.make_petition()
    response = sign(csrf_app.test_client(), petition, headers=headers)
    assert response.status_code == 200 and "your signature has been added" in response.text
    assert count(Signature) == 1


def test_trusted_origins_may_post_their_copy_of_the_form(make_app):
    """An origin in SIGN_TRUSTED_ORIGINS (the organisation's own site) signs cross-site; others are still refused."""
    app = make_app(WTF_CSRF_ENABLED=True, SIGN_TRUSTED_ORIGINS="https://www.example.org, https://act.example.org:8443")
    with app.app_context():
        petition = factories.make_petition()
        client = app.test_client()
        for origin in ("https://www.example.org", "https://act.example.org:8443"):
            response = sign(client, petition, email=f"x@{origin.split('//')[1].split(':')[0]}",
                            headers={"Sec-Fetch-Site": "cross-site", "Origin": origin})
            assert response.status_code == 200, origin
        assert sign(client, petition, headers={"Sec-Fetch-Site": "cross-site",
                                               "Origin": "https://www.example.org.attacker.example"}).status_code == 403
        assert count(Signature) == 2


def test_embed_signs_without_a_token_and_refuses_cross_site_posts(csrf_app):
    """The embed may be framed anywhere; its own (same-origin) POST signs, a cross-site one gets the embed form back."""
    petition = factories.make_petition()
    client = csrf_app.test_client()
    page = client.get(f"/p/{petition.slug}/embed")
    assert page.headers["Content-Security-Policy"] == "frame-ancestors *"
    assert "X-Frame-Options" not in page.headers and '<nav aria-label="Main">' not in page.text
    url = f"/p/{petition.slug}/embed/sign"
    data = {"email": "embed@example.net", "first_name": "Em"}
    refused = client.post(url, data=data, headers=CROSS_SITE)
    assert refused.status_code == 403 and 'value="Em"' in refused.text and f'action="{url}"' in refused.text
    assert refused.headers["Content-Security-Policy"] == "frame-ancestors *"  # still shown inside the frame
    response = client.post(url, data=data, headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 200 and "your signature has been added" in response.text
    assert db.session.scalar(db.select(Signature.source)) == "embed"


@contextmanager
def on_statement(callback):
    """Call `callback(statement)` before each SQL statement sent to the database inside the block."""
    def before(conn, cursor, statement, parameters, context, executemany):
        callback(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(db.engine, "before_cursor_execute", before)


@contextmanager
def twin_before(statement_starts: tuple[str, ...], twin):
    """Run `twin(connection)` on a connection of its own, committed, just before our first
    statement that starts with one of `statement_starts`; yields a list that is non-empty once it ran."""
    raced: list[bool] = []

    def before(statement):
        if statement.lstrip().startswith(statement_starts) and not raced:
            raced.append(True)
            with db.engine.connect() as other:
                twin(other)
                other.commit()

    with on_statement(before):
        yield raced


def test_concurrent_duplicate_is_absorbed(app, client):
    """A twin request that inserts the same signature between our check and our insert is no 500."""
    petition = factories.make_petition()
    # Fields all known, so our transaction writes nothing before the signature (SQLite locks).
    supporter = factories.make_supporter(email="ada@example.net", postal_code="N1", country="GB")

    def twin_signs_first(other):
        # Another request, on its own connection, commits the same signature first.
        other.execute(db.insert(Signature).values(petition_id=petition.id, supporter_id=supporter.id))

    with twin_before(("INSERT INTO signature",), twin_signs_first) as raced:
        response = sign(client, petition)
    assert raced and response.status_code == 200 and "You had already signed" in response.text
    assert count(Signature) == 1


@contextmanager
def statements_run():
    """Collect the SQL statements sent to the database inside the block."""
    seen: list[str] = []
    with on_statement(lambda statement: seen.append(" ".join(statement.split()))):
        yield seen


def test_form_view_is_served_from_the_page_cache(app, client):
    """A form view within the page's lifetime runs no SQL; building it again is one SELECT, no write."""
    petition = factories.make_petition()
    url = f"/p/{petition.slug}"  # read now: the test shares the request's session, which commits
    client.get(url)  # stores the legacy petition's wording row, caches the count and the page
    wording = petition.consent_wording
    with statements_run() as seen:
        response = client.get(url)
    assert response.status_code == 200 and wording in response.text and seen == []
    pages.cache().forget()
    with statements_run() as seen:
        response = client.get(url)
    assert response.status_code == 200 and wording in response.text
    assert len(seen) == 1 and seen[0].startswith("SELECT petition.id")
    assert "consent_wording" in seen[0]  # the current wording comes in the same statement


def test_new_signer_is_one_statement_on_postgresql(app, client):
    """On PostgreSQL a new address is signed with one statement (the petition page is cached)."""
    if not is_postgres():
        pytest.skip("the single-statement path is PostgreSQL's (data-modifying CTEs)")
    # Only the slug: the test shares the request's session, whose commit would expire a model
    # and reload it (one more statement) inside the block.
    petition = SimpleNamespace(slug=factories.make_petition().slug)
    client.get(f"/p/{petition.slug}")
    with statements_run() as seen:
        response = sign(client, petition)
    assert response.status_code == 200 and "your signature has been added" in response.text
    assert len(seen) == 1 and seen[0].startswith("WITH target AS")
    assert count(Signature) == 1 and count(Supporter) == 1 and count(ConsentEvent) == 1


def test_count_is_cached_and_refreshed_after_its_lifetime(make_app):
    """Signatures added elsewhere appear on the public page once the cached count's lifetime ends."""
    # The count's lifetime is a Redis expiry, so it cannot be moved by hand: long enough that the
    # first two views fall inside it on a loaded machine.
    app = make_app(SIGNATURE_COUNT_CACHE_SECONDS=2.0)
    with app.app_context():
        petition = factories.make_petition(goal=100)
        factories.make_signature(petition, factories.make_supporter())
        client = app.test_client()
        assert "<strong>1</strong> signature ·" in client.get(f"/p/{petition.slug}").text
        factories.make_signature(petition, factories.make_supporter())  # an import, say
        assert "<strong>1</strong> signature ·" in client.get(f"/p/{petition.slug}").text
        time.sleep(2.1)
        assert "<strong>2</strong> signatures" in client.get(f"/p/{petition.slug}").text
        assert service.signature_count(petition) == 2  # the staff side always counts exactly


def test_signer_sees_their_signature_counted_at_once(app, client):
    """A signature through the form bumps the cached count: thank-you page and next view include it."""
    petition = factories.make_petition()
    factories.make_signature(petition, factories.make_supporter())
    assert "<strong>1</strong> signature ·" in client.get(f"/p/{petition.slug}").text
    response = sign(client, petition)
    assert "<strong>2</strong> people have signed so far" in response.text
    assert "<strong>2</strong> signatures" in client.get(f"/p/{petition.slug}").text
    again = sign(client, petition)  # signing twice adds nothing, to the count either
    assert "You had already signed" in again.text and "<strong>2</strong> people" in again.text


def test_count_without_redis_is_exact(app, client, monkeypatch):
    """If Redis fails, the public pages count in the database rather than fail."""
    class Broken:
        def __getattr__(self, name):
            raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(service, "get_redis", lambda: Broken())
    petition = factories.make_petition()
    factories.make_signature(petition, factories.make_supporter())
    assert "<strong>1</strong> signature ·" in client.get(f"/p/{petition.slug}").text
    assert "<strong>2</strong> people have signed" in sign(client, petition).text


def test_status_change_in_this_process_shows_at_once(app, client):
    """Closing a petition here drops this process's cached pages: the next view says it is closed."""
    petition = factories.make_petition()
    assert "<form" in client.get(f"/p/{petition.slug}").text
    service.change_status(petition, "close")
    page = client.get(f"/p/{petition.slug}").text
    assert "This petition is closed" in page and "<form" not in page


def test_petition_closed_elsewhere_refuses_signatures_at_once(app, client):
    """Closed by another web process, a petition may show its cached form a moment longer, but the
    database refuses the signature: a 409, nothing recorded, and the stale copy is dropped."""
    petition = factories.make_petition()
    slug = petition.slug
    client.get(f"/p/{slug}")
    # Another process closes it: no signal reaches this one's cache.
    db.session.execute(db.update(Petition).where(Petition.id == petition.id).values(status="closed"))
    db.session.commit()
    assert "<form" in client.get(f"/p/{slug}").text  # the cached copy, for at most its lifetime
    response = sign(client, SimpleNamespace(slug=slug), wording_version="1")
    assert response.status_code == 409 and "This petition is closed" in response.text
    assert count(Signature) == 0 and count(Supporter) == 0 and count(ConsentEvent) == 0
    assert "<form" not in client.get(f"/p/{slug}").text


def test_cached_page_is_rebuilt_after_its_lifetime(make_app, monkeypatch):
    """An edit made by another process shows once PUBLIC_PAGE_CACHE_SECONDS have passed."""
    from crm.public import pages

    now = [1000.0]  # the cache's clock, moved by hand: a loaded machine cannot make it flaky
    monkeypatch.setattr(pages, "time", SimpleNamespace(monotonic=lambda: now[0]))
    app = make_app(PUBLIC_PAGE_CACHE_SECONDS=0.2)
    with app.app_context():
        petition = factories.make_petition(title="First title")
        slug, client = petition.slug, app.test_client()
        assert "First title" in client.get(f"/p/{slug}").text
        db.session.execute(db.update(Petition).where(Petition.id == petition.id).values(title="Second title"))
        db.session.commit()
        now[0] += 0.1
        assert "First title" in client.get(f"/p/{slug}").text
        now[0] += 0.2
        assert "Second title" in client.get(f"/p/{slug}").text


def test_cached_pages_are_kept_per_host(app, client):
    """The thank-you page links back to the host it was asked on, never to one cached for another Host."""
    petition = factories.make_petition()
    data = {"email": "mallory@example.net", "first_name": "M"}
    forged = client.post(f"/p/{petition.slug}/sign", data=data, base_url="http://attacker.example")
    assert f"http://attacker.example/p/{petition.slug}" in forged.text
    response = sign(client, petition)
    assert "your signature has been added" in response.text
    assert f"http://localhost/p/{petition.slug}" in response.text and "attacker.example" not in response.text


def test_simultaneous_signs_by_one_new_address(make_app):
    """Two requests signing with the same new address at once: both answered, one signature kept."""
    app = make_app()
    with app.app_context():
        petition = SimpleNamespace(slug=factories.make_petition().slug)
        app.test_client().get(f"/p/{petition.slug}")  # the wording row exists before the race
        db.session.remove()
    start = threading.Barrier(2)
    answers = []

    def signer():
        client = app.test_client()
        start.wait()
        response = sign(client, petition)  # each request has its own app context and session
        answers.append((response.status_code, response.text))

    threads = [threading.Thread(target=signer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(code for code, _ in answers) == [200, 200]
    texts = [text for _, text in answers]
    assert sum("your signature has been added" in t for t in texts) == 1
    assert sum("You had already signed" in t for t in texts) == 1
    with app.app_context():
        assert count(Supporter) == 1 and count(Signature) == 1 and count(ConsentEvent) == 1


def test_twin_creates_the_new_address_first(app, client):
    """A twin that commits the same new supporter and signature just before ours: no 500, no duplicate."""
    petition = factories.make_petition()
    client.get(f"/p/{petition.slug}")

    def twin_signs_first(other):
        # Another request, on its own connection, creates the supporter and signs first.
        supporter_id = other.execute(db.insert(Supporter).values(
            email="ada@example.net", email_status="never_subscribed").returning(Supporter.id)).scalar()
        other.execute(db.insert(Signature).values(petition_id=petition.id, supporter_id=supporter_id))

    with twin_before(("WITH target", "INSERT INTO supporter"), twin_signs_first) as raced:
        response = sign(client, petition)
    assert raced and response.status_code == 200 and "You had already signed" in response.text
    assert count(Supporter) == 1 and count(Signature) == 1 and count(ConsentEvent) == 0


def test_long_slug_is_recorded_without_error(app, client):
    """A slug at its 120-character limit is cut to fit the source columns, never a database error."""
    petition = factories.make_petition(slug="a" * 120)
    response = sign(client, petition)
    assert response.status_code == 200 and "your signature has been added" in response.text
    supporter = db.session.scalar(db.select(Supporter))
    (event_,) = events_for(supporter)
    assert supporter.source == f"petition:{'a' * 120}"[:100]
    assert event_.source == f"petition:{'a' * 120}"[:120]


@pytest.mark.parametrize("version", ["99999999999", "-1", "0", "x", "", "7"])
def test_unknown_wording_version_records_the_current_one(app, client, version):
    """A form posted with a version that cannot exist is recorded with the current wording."""
    petition = factories.make_petition()
    response = sign(client, petition, wording_version=version)
    assert response.status_code == 200
    (event_,) = db.session.scalars(db.select(ConsentEvent)).all()
    assert event_.wording_version == 1 and event_.wording == petition.consent_wording


def test_form_renders_no_none_attributes(app, client):
    """Fields without errors carry no aria-invalid/aria-describedby (WTForms wrote them as "None")."""
    petition = factories.make_petition(consent_mode="checkbox")
    page = client.get(f"/p/{petition.slug}").text
    assert '"None"' not in page and "aria-invalid" not in page
    errors = sign(client, petition, email="nope").text
    assert 'aria-describedby="email-err" aria-invalid="true"' in errors and '"None"' not in errors


# What the quick check sees: absent fields, blanks, text around each length limit, odd countries.
_maybe_text = st.one_of(st.none(), st.sampled_from(["", "  ", "Ada", " Ada "]), st.text(max_size=25),
                        st.text(min_size=15, max_size=25), st.text(min_size=95, max_size=105),
                        st.text(alphabet=" ", min_size=101, max_size=120))
_emails = st.one_of(st.none(), st.emails(), st.text(max_size=30),
                    st.sampled_from(["Ada@Example.NET", "  ada@example.net ", "a@b", "@example.net", "a" * 330]))
_signature_forms = st.fixed_dictionaries({
    "email": _emails, "first_name": _maybe_text, "last_name": _maybe_text, "postal_code": _maybe_text,
    "comment": st.one_of(_maybe_text, st.text(min_size=1990, max_size=2010)),
    "country": st.one_of(st.none(), st.text(max_size=4),
                         st.sampled_from(["", " ", "gb", " fr ", "GBR", "g1", "ǅǅ", "ßß", "\u00e9e"])),
    "consent": st.one_of(st.none(), st.sampled_from(["y", "", "false", "False", "on"])),
    "wording_version": st.one_of(st.none(), st.sampled_from(["1", "", "x"])),
})


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=_signature_forms)
def test_quick_signature_data_accepts_only_what_the_form_accepts(app, values):
    """Whatever quick_signature_data accepts, SignForm validates too, with exactly the same data."""
    formdata = MultiDict({name: value for name, value in values.items() if value is not None})
    quick = quick_signature_data(formdata)
    if quick is None:
        return  # the view builds the SignForm, which decides
    with app.test_request_context(method="POST"):
        form = SignForm(formdata=formdata, meta={"csrf": False})
        assert form.validate(), form.errors
        assert form.signature_data() == quick


def test_quick_signature_data_takes_an_ordinary_signature(app):
    """A plainly valid post takes the quick path (else the SignForm would be built for every signer)."""
    data = quick_signature_data(MultiDict({"email": " Ada@Example.NET", "first_name": "Ada", "last_name": "",
                                           "postal_code": "N1 1AA", "country": "gb", "comment": "",
                                           "website": "", "wording_version": "1"}))
    assert data is not None and data["email"] == "ada@example.net" and data["country"] == "GB"
    assert data["consent"] is False and data["wording_version"] == "1"



def test_over_long_name_is_refused_with_the_imports_words(app, client):
    """A 101-character first name is refused beside the field (the import's reason), never cut; no maxlength."""
    petition = factories.make_petition()
    page = client.get(f"/p/{petition.slug}").text
    assert "maxlength" not in page  # a browser would cut a paste short without a word
    response = sign(client, petition, first_name="A" * 101)
    assert response.status_code == 400
    assert "First name longer than 100 characters." in response.text
    assert count(Supporter) == 0 and count(Signature) == 0


def test_country_is_a_select_by_name_starting_on_the_organisations(make_app):
    """Every ISO 3166 country by name, stored as its code; the organisation's country is preselected."""
    app = make_app(ORG_COUNTRY="FR")
    with app.app_context():
        petition = factories.make_petition()
        client = app.test_client()
        page = client.get(f"/p/{petition.slug}").text
        assert '<select id="country" name="country" autocomplete="country">' in page
        assert '<option value="FR" selected>France</option>' in page
        assert '<option value="CI">Côte d&#39;Ivoire</option>' in page and page.count("<option value=") == 250
        sign(client, petition, country="DE")
        assert db.session.scalar(db.select(Supporter.country)) == "DE"
        refused = sign(client, petition, email="b@example.net", country="XX")
        assert refused.status_code == 400 and "Choose your country from the list." in refused.text


def test_petition_text_comes_before_the_form(app, client):
    """The petition's first paragraph, then "Read more" with the rest, then the form."""
    petition = factories.make_petition(body="Why this matters.\n\nMore detail here.\n\n- a list")
    page = client.get(f"/p/{petition.slug}").text
    lead, more, form = page.index("Why this matters."), page.index("<summary>Read more</summary>"), \
        page.index('<form class="sign"')
    assert lead < more < page.index("More detail here.") < form


def test_counts_use_plural_forms(app, client):
    """One signature is "1 signature" and "1 person has signed"; two are plural."""
    petition = factories.make_petition()
    first = sign(client, petition)
    assert "<strong>1</strong> person has signed so far." in first.text
    assert "<strong>1</strong> signature ·" in client.get(f"/p/{petition.slug}").text
    second = sign(client, petition, email="two@example.net")
    assert "<strong>2</strong> people have signed so far." in second.text

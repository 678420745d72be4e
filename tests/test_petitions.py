"""Staff side of petitions: create, edit, status changes, wording versions, the report page."""

from datetime import timedelta
from html.parser import HTMLParser

import pytest

from crm.extensions import db
from crm.models import ConsentWording, Petition, Signature, Supporter, utcnow
from crm.petitions import service
from tests import factories


def petition_form(**overrides) -> dict:
    values = {
        "slug": "safe-routes", "title": "Safe routes now", "addressed_to": "The Home Secretary",
        "body": "We call for **safe routes**.", "goal": "500",
        "thank_you_message": "Thanks!", "redirect_url": "",
        "consent_wording": "You will get updates from Test Org.", "consent_mode": "implied",
    }
    values.update(overrides)
    return values


def test_organizer_creates_a_draft_with_wording_version_one(app, client_as):
    """Creating stores a draft petition and version 1 of its consent wording."""
    client = client_as("organizer")
    response = client.post("/petitions/new", data=petition_form())
    assert response.status_code == 302
    petition = db.session.scalar(db.select(Petition).filter_by(slug="safe-routes"))
    assert petition.status == "draft" and petition.goal == 500
    assert petition.consent_wording_version == 1
    (row,) = db.session.scalars(db.select(ConsentWording).filter_by(petition_id=petition.id)).all()
    assert (row.version, row.mode, row.text) == (1, "implied", "You will get updates from Test Org.")


def test_new_form_offers_the_default_wording(app, client_as):
    """The new-petition form is prefilled with the promise naming the organisation."""
    page = client_as("organizer").get("/petitions/new").text
    assert ("By signing this petition you will receive periodic email updates from Test Org. "
            "You may unsubscribe at any time.") in page


@pytest.mark.parametrize("url", ["/petitions/new"])
def test_analyst_cannot_create(app, client_as, url):
    """Analysts are read-only: creating a petition is refused with 403."""
    client = client_as("analyst")
    assert client.get(url).status_code == 403
    assert client.post(url, data=petition_form()).status_code == 403
    assert db.session.scalar(db.select(db.func.count()).select_from(Petition)) == 0


def test_analyst_cannot_edit_or_change_status(app, client_as):
    """Analysts get 403 on edit, publish, close and archive, and nothing changes."""
    petition = factories.make_petition(status="draft")
    client = client_as("analyst")
    assert client.post(f"/petitions/{petition.id}/edit", data=petition_form()).status_code == 403
    for action in ("publish", "close", "archive"):
        assert client.post(f"/petitions/{petition.id}/{action}").status_code == 403
    db.session.refresh(petition)
    assert petition.status == "draft"


def test_publish_close_archive(app, client_as):
    """Publish opens and stamps published_at; close stamps closed_at; archive ends it."""
    petition = factories.make_petition(status="draft")
    client = client_as("organizer")
    assert client.post(f"/petitions/{petition.id}/publish").status_code == 302
    db.session.refresh(petition)
    assert petition.status == "open" and petition.published_at is not None
    client.post(f"/petitions/{petition.id}/close")
    db.session.refresh(petition)
    assert petition.status == "closed" and petition.closed_at is not None
    client.post(f"/petitions/{petition.id}/archive")
    db.session.refresh(petition)
    assert petition.status == "archived"
    response = client.post(f"/petitions/{petition.id}/publish", follow_redirects=True)
    assert "cannot be open" in response.text
    db.session.refresh(petition)
    assert petition.status == "archived"


@pytest.mark.parametrize("slug", ["Upper", "has space", "under_score", "-leading", "trailing-",
                                  "double--hyphen", "ümlaut", "a" * 121, ""])
def test_bad_slugs_are_refused(app, client_as, slug):
    """Slugs are lowercase letters, digits and single hyphens; anything else is a form error."""
    response = client_as("organizer").post("/petitions/new", data=petition_form(slug=slug))
    assert response.status_code == 400
    assert 'id="slug-err"' in response.text
    assert db.session.scalar(db.select(db.func.count()).select_from(Petition)) == 0


def test_duplicate_slug_is_refused(app, client_as):
    """A slug already used by another petition is a form error, not a 500."""
    factories.make_petition(slug="taken")
    response = client_as("organizer").post("/petitions/new", data=petition_form(slug="taken"))
    assert response.status_code == 400 and "already uses this slug" in response.text


class ElementCollector(HTMLParser):
    """Collect the real elements (tag, attributes) of an HTML fragment; escaped text is not one."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def assert_harmless(html: str) -> None:
    for tag, attrs in ElementCollector(html).elements:
        assert tag not in ("script", "img", "iframe", "style"), tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("href", "src"):
            assert not (attrs.get(name) or "").strip().lower().startswith("javascript:"), attrs


def test_markdown_is_sanitised(app):
    """Script tags, on* attributes and javascript: links never survive rendering."""
    html = str(service.render_markdown(
        "Hello <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
        "[click](javascript:alert(1)) [ok](https://example.org) **bold**\n\n"
        '<a href="javascript:alert(2)" onclick="x()">raw</a>'))
    assert_harmless(html)
    assert "&lt;script&gt;" in html  # shown as text, not run
    assert '<a href="https://example.org"' in html and "<strong>bold</strong>" in html


def test_markdown_body_on_pages_is_sanitised(app, client_as):
    """The public page and the staff page render the body without its script."""
    petition = factories.make_petition(body='<script>alert("x")</script>\n\n[x](javascript:alert(1))')
    for response in (client_as("analyst").get(f"/petitions/{petition.id}"),
                     app.test_client().get(f"/p/{petition.slug}")):
        assert response.status_code == 200
        assert_harmless(response.text)


@pytest.mark.parametrize("url,ok", [
    ("", True), ("/thanks", True), ("https://partner.example.com/thanks", True),
    ("https://evil.example.net/", False), ("//evil.example.net/", False),
    ("javascript:alert(1)", False), ("https://user:pw@partner.example.com/", False),
    ("/\\evil.example.net", False),
])
def test_redirect_url_allow_list(make_app, url, ok):
    """Redirects go to same-site paths or SIGN_REDIRECT_HOSTS hosts only."""
    app = make_app(SIGN_REDIRECT_HOSTS="partner.example.com, other.example.com")
    with app.app_context():
        assert (service.redirect_problem(url) is None) is ok
        if not ok:
            user = factories.make_staff("organizer")
            client = app.test_client()
            client.post("/login", data={"email": user.email, "password": factories.PASSWORD})
            response = client.post("/petitions/new", data=petition_form(redirect_url=url))
            assert response.status_code == 400 and 'id="redirect_url-err"' in response.text


def test_editing_wording_adds_a_version(app, client_as):
    """Changing wording text or mode adds a version row; other edits do not."""
    client = client_as("organizer")
    client.post("/petitions/new", data=petition_form())
    petition = db.session.scalar(db.select(Petition).filter_by(slug="safe-routes"))
    client.post(f"/petitions/{petition.id}/edit", data=petition_form(title="Safe routes, now"))
    db.session.refresh(petition)
    assert petition.title == "Safe routes, now" and petition.consent_wording_version == 1
    client.post(f"/petitions/{petition.id}/edit", data=petition_form(consent_wording="New words."))
    client.post(f"/petitions/{petition.id}/edit",
                data=petition_form(consent_wording="New words.", consent_mode="checkbox"))
    db.session.refresh(petition)
    assert petition.consent_wording_version == 3
    rows = db.session.execute(db.select(ConsentWording.version, ConsentWording.mode, ConsentWording.text)
                              .filter_by(petition_id=petition.id).order_by(ConsentWording.version)).all()
    assert [tuple(r) for r in rows] == [
        (1, "implied", "You will get updates from Test Org."), (2, "implied", "New words."),
        (3, "checkbox", "New words.")]
    page = client.get(f"/petitions/{petition.id}").text
    assert "You will get updates from Test Org." in page and "version 3" in page


def test_legacy_petition_keeps_old_wording_in_history(app, client_as):
    """A petition without wording rows (demo/legacy) records its old text before the new one."""
    petition = factories.make_petition(consent_wording="Old promise.")
    client_as("organizer").post(f"/petitions/{petition.id}/edit", data=petition_form(
        slug=petition.slug, consent_wording="New promise."))
    texts = db.session.scalars(db.select(ConsentWording.text).filter_by(petition_id=petition.id)
                               .order_by(ConsentWording.version)).all()
    assert texts == ["Old promise.", "New promise."]


def test_staff_page_shows_counts_and_opt_in_rate(app, client_as):
    """The report counts signatures, opt-in rate, per-day bars, newest signers and links."""
    petition = factories.make_petition(title="Counted", goal=10)
    subscribed = [factories.make_supporter() for _ in range(3)]
    unsubscribed = factories.make_supporter(subscribed=False, first_name="Quiet", last_name="One")
    for supporter in [*subscribed, unsubscribed]:
        factories.make_signature(petition, supporter)
    factories.make_signature(petition, factories.make_supporter(),
                             created_at=utcnow() - timedelta(days=3))
    factories.make_signature(factories.make_petition(), factories.make_supporter(subscribed=False))

    stats = service.petition_stats(petition)
    assert stats.signatures == 5 and stats.subscribed_signers == 4
    assert stats.figures.subscribed_share == pytest.approx(0.8)
    assert stats.figures.opt_in_rate == 0  # made by factories: nobody agreed on this petition's form
    assert len(stats.per_day) == 30 and sum(n for _, n in stats.per_day) == 5
    assert stats.per_day[-1][1] == 4 and stats.per_day[-4][1] == 1

    page = client_as("analyst").get(f"/petitions/{petition.id}").text
    assert ">5</span>" in page and "80%" in page and "50%" in page
    assert "Quiet One" in page and f"/supporters/{unsubscribed.id}" in page
    assert f"https://crm.example.org/p/{petition.slug}" in page and f"/p/{petition.slug}/embed" in page
    assert f"petition={petition.id}" in page and "Export signers" in page
    assert "<svg" in page and page.count("<rect") == 30


def test_signature_counts_do_not_load_rows(app):
    """An empty petition reports zero and no opt-in rate rather than dividing by zero."""
    petition = factories.make_petition()
    stats = service.petition_stats(petition)
    assert stats.signatures == 0 and stats.figures.opt_in_rate is None and stats.figures.subscribed_share is None
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)) == 0


def test_markdown_cache_follows_edits(app, client):
    """The public page's cached Markdown shows an edited body at once (the cache is keyed on the text)."""
    petition = factories.make_petition(body="Original **version**")
    assert "Original <strong>version</strong>" in client.get(f"/p/{petition.slug}").text
    assert service.render_markdown("Original **version**") is service.render_markdown("Original **version**")
    service.save_petition({"slug": petition.slug, "title": petition.title, "goal": 10, "body": "Second _take_",
                           "consent_mode": "implied", "consent_wording": petition.consent_wording}, petition)
    page = client.get(f"/p/{petition.slug}").text
    assert "Second <em>take</em>" in page and "Original" not in page


def test_long_markdown_is_rendered_but_not_cached(app):
    """A body over the cache's size limit is still rendered and sanitised, just not kept."""
    text = "x" * service.MARKDOWN_CACHE_MAX_CHARS + " <script>alert(1)</script>"
    before = service._render_markdown_cached.cache_info().currsize
    html = str(service.render_markdown(text))
    assert html.startswith("<p>xxx") and "<script>" not in html
    assert service._render_markdown_cached.cache_info().currsize == before


def _errors(page: str) -> list[str]:
    """The field error messages a staff page shows, in order."""
    import re

    return re.findall(r'<p class="error" id="[\w-]+-err" role="alert">([^<]*)</p>', page)


def test_every_petition_error_is_reported_in_one_submit(app, client_as):
    """A missing goal, a bad slug and a foreign redirect all show at once; a second submit lists each once."""
    client = client_as("organizer")
    bad = petition_form(goal="", slug="Not A Slug", redirect_url="https://evil.example.net/x")
    first = client.post("/petitions/new", data=bad)
    assert first.status_code == 400
    errors = _errors(first.text)
    assert len(errors) == 3
    assert any("Use lowercase letters" in e for e in errors)
    assert any("evil.example.net is not an allowed redirect host" in e for e in errors)
    again = client.post("/petitions/new", data=bad)
    assert _errors(again.text) == errors
    empty_slug = _errors(client.post("/petitions/new", data=petition_form(slug="")).text)
    assert len(empty_slug) == 1  # the form's own message alone, not the service's again in other words
    assert db.session.scalar(db.select(db.func.count()).select_from(Petition)) == 0


def test_embed_snippet_escapes_a_hostile_title(app, client_as):
    """A title with quotes and markup stays inside the iframe's title attribute of the copied snippet."""
    title = 'Stop "it" now" onload="alert(1)" x="<script>alert(2)</script>&'
    petition = factories.make_petition(title=title)
    page = client_as("analyst").get(f"/petitions/{petition.id}").text
    start = page.index('<textarea id="embed-snippet"')
    shown = page[page.index(">", start) + 1:page.index("</textarea>", start)]
    assert "<" not in shown and '"' not in shown  # escaped once more to be shown as text

    import html

    snippet = html.unescape(shown)  # exactly what staff copy into a partner's page

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags = []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))

    parser = Collect()
    parser.feed(snippet)
    assert [tag for tag, _ in parser.tags] == ["iframe"]
    attrs = parser.tags[0][1]
    assert sorted(attrs) == ["height", "src", "style", "title", "width"]
    assert attrs["title"] == title and attrs["src"] == f"https://crm.example.org/p/{petition.slug}/embed"


def test_opt_in_rate_at_signing_does_not_fall_when_people_unsubscribe(app, client, client_as):
    """Reports: "opted in when signing" counts agreements on our form (imports aside) and stays;
    "subscribed now" falls."""
    from crm.supporters.consent import record_consent

    petition = factories.make_petition(consent_mode="checkbox", consent_wording="Tick for updates.")
    for n, ticked in enumerate([True, True, False, False]):
        data = {"email": f"s{n}@example.org", "first_name": "S"}
        if ticked:
            data["consent"] = "y"
        assert client.post(f"/p/{petition.slug}/sign", data=data).status_code == 200
    factories.make_signature(petition, factories.make_supporter(), source="import:7")  # never saw the form
    leaver = db.session.scalar(db.select(Supporter).filter_by(email="s0@example.org"))
    record_consent(leaver, "opt_out", "unsubscribe_link")
    db.session.commit()

    figures = service.consent_figures()[petition.id]
    assert (figures.signatures, figures.form_signatures, figures.opted_in_at_signing, figures.subscribed_now) == \
        (5, 4, 2, 2)
    assert figures.opt_in_rate == pytest.approx(0.5) and figures.subscribed_share == pytest.approx(0.4)
    from reports import rollups

    rollups.refresh()  # the page reads the roll-ups
    page = client_as("analyst").get("/reports/petitions").text
    report = page[page.index('id="petition-report"'):]
    assert "Opted in when signing" in page and "Subscribed now" in page and "Opt-in rate" not in page
    assert "50% <span class=\"muted\">(2 of 4 form signatures)</span>" in report
    assert "40% <span class=\"muted\">(2 signers)</span>" in report

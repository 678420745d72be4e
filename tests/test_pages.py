"""The staff shell: every section renders real data, errors look like the app, demo data loads."""

import pytest

from crm.demo import ensure_demo_admin, load_demo_data
from crm.extensions import db
from crm.models import ConsentEvent, Petition, Signature, Supporter
from tests import factories

SECTIONS = ["/", "/supporters/", "/petitions/", "/segments/", "/campaigns/", "/reports/"]


@pytest.mark.parametrize("role", ["analyst", "organizer", "admin"])
def test_every_section_renders_for_every_role(app, client_as, role):
    """Each nav section answers 200 with the layout; Settings shows only for admins."""
    client = client_as(role)
    for url in SECTIONS:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b'<nav aria-label="Main">' in response.data
    assert (b'href="/settings/"' in client.get("/").data) is (role == "admin")


def test_demo_data_promises_updates_and_records_consent(app):
    """Demo data: an open asylum petition with the promise, a closed one, supporters with proof."""
    message = load_demo_data(supporters=40)
    assert "40 supporters" in message
    asylum = db.session.scalar(db.select(Petition).filter_by(slug="fair-asylum"))
    assert asylum.status == "open" and asylum.consent_mode == "implied"
    assert asylum.consent_wording == ("By signing this petition you will receive periodic email updates "
                                      "from Test Org. You may unsubscribe at any time.")
    assert db.session.scalar(db.select(db.func.count()).select_from(Petition).filter_by(status="closed")) == 1
    subscribed = db.session.scalars(db.select(Supporter).filter_by(email_status="subscribed")).all()
    assert subscribed
    for supporter in subscribed:
        events = db.session.scalars(supporter.consent_events.select()).all()
        assert events[-1].action == "opt_in" and events[-1].wording == asylum.consent_wording
        assert events[-1].wording_id is not None
    assert load_demo_data().startswith("Demo data skipped")
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)) >= 40


def test_demo_admin_can_sign_in(app, client):
    """The printed demo login works."""
    email, password = ensure_demo_admin()
    assert client.post("/login", data={"email": email, "password": password}).status_code == 302
    assert ensure_demo_admin() == (email, password)


def test_supporter_pages_show_consent_proof(app, client_as):
    """The profile shows the consent timeline with the exact wording."""
    supporter = factories.make_supporter(email="ana@example.net")
    petition = factories.make_petition(title="Safe routes now")
    factories.make_signature(petition, supporter)
    client = client_as("analyst")
    listing = client.get("/supporters/?q=ANA")
    assert b"ana@example.net" in listing.data
    profile = client.get(f"/supporters/{supporter.id}").text
    assert "Test wording" in profile and "Safe routes now" in profile
    assert client.get("/supporters/?email_status=unsubscribed").text.count("ana@example.net") == 0


def test_supporter_list_pages_by_keyset(app, client_as):
    """Sixty supporters make two pages; the second starts where the first ended."""
    for _ in range(60):
        factories.make_supporter(subscribed=False)
    client = client_as("analyst")
    first = client.get("/supporters/").text
    assert first.count("/supporters/") >= 50 and "Next page" in first
    last_id = db.session.scalars(db.select(Supporter.id).order_by(Supporter.id.desc())).all()[49]
    second = client.get(f"/supporters/?after={last_id}").text
    assert "Next page" not in second
    assert f"/supporters/{last_id}\"" not in second


def test_output_is_escaped(app, client_as):
    """Names are HTML-escaped wherever they are shown."""
    supporter = factories.make_supporter(first_name="<script>alert(1)</script>")
    page = client_as("analyst").get(f"/supporters/{supporter.id}").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


def test_error_pages_use_the_app_look(app, client_as):
    """404 and 403 render the app's own error page."""
    client = client_as("analyst")
    missing = client.get("/supporters/424242")
    assert missing.status_code == 404 and b"There is nothing at this address" in missing.data
    forbidden = client.get("/settings/")
    assert forbidden.status_code == 403 and b"does not have access" in forbidden.data


def test_unexpected_errors_render_the_500_page(make_app):
    """An exception inside a view becomes the friendly 500 page, not a traceback."""
    app = make_app(TESTING=False, PROPAGATE_EXCEPTIONS=False)

    def boom():
        raise RuntimeError("boom")

    boom.access = "public"
    app.add_url_rule("/boom", "boom", boom)
    with app.app_context():
        response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert b"Something went wrong" in response.data and b"boom" not in response.data


def test_reports_count_signatures_and_opt_ins(app, client_as):
    """The petition report counts signatures and subscribed signers."""
    petition = factories.make_petition(title="Report me")
    factories.make_signature(petition, factories.make_supporter())
    factories.make_signature(petition, factories.make_supporter(subscribed=False))
    from reports import rollups

    rollups.refresh()  # the page reads the roll-ups
    page = client_as("analyst").get("/reports/petitions").text
    assert "Report me" in page and "50%" in page
    assert db.session.scalar(db.select(db.func.count()).select_from(ConsentEvent)) == 1


def test_health_endpoint_answers_without_a_session(client):
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")
    assert "Set-Cookie" not in response.headers and response.headers["Cache-Control"] == "no-store"

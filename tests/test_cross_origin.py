"""Fetch Metadata CSRF protection: the rule itself, its settings, and a staff form and one-click under it.

(The public sign forms' answers to a refused post are in tests/test_signing.py; a real browser
posting from another site is in tests/e2e/test_embed_journey.py.)
"""

import pytest

from campaigns.tokens import make_unsubscribe_token
from crm.config import ConfigError, load_config, origin_of, parse_origins
from crm.cross_origin import is_cross_origin
from crm.extensions import db
from crm.models import Petition
from tests import factories
from tests.test_petitions import petition_form

OWN = frozenset({"https://crm.example.org"})
TRUSTED = frozenset({"https://www.example.org"})


@pytest.mark.parametrize(("method", "fetch_site", "origin", "refused"), [
    ("POST", "same-origin", "https://crm.example.org", False),
    ("POST", "none", None, False),
    ("POST", "same-site", "https://www.crm.example.org", True),
    ("POST", "cross-site", "https://attacker.example", True),
    ("POST", "cross-site", None, True),
    ("POST", "cross-site", "https://www.example.org", False),  # trusted
    ("POST", "same-site", "https://www.example.org", False),  # trusted
    ("POST", None, "https://crm.example.org", False),
    ("POST", None, "https://www.example.org", False),  # trusted
    ("POST", None, "https://attacker.example", True),
    ("POST", None, "null", True),
    ("POST", None, None, False),  # not a browser
    ("PUT", "cross-site", "https://attacker.example", True),
    ("DELETE", None, "https://attacker.example", True),
    ("GET", "cross-site", "https://attacker.example", False),  # safe methods are never refused
    ("HEAD", "cross-site", None, False),
    ("OPTIONS", "cross-site", None, False),
])
def test_the_rule(method, fetch_site, origin, refused):
    """Go's CrossOriginProtection: Sec-Fetch-Site first, then Origin, trusted origins always, neither allowed."""
    assert is_cross_origin(method, fetch_site, origin, OWN, TRUSTED) is refused


@pytest.mark.parametrize(("url", "origin"), [
    ("https://www.example.org", "https://www.example.org"),
    ("HTTPS://WWW.Example.ORG/", "https://www.example.org"),
    ("https://www.example.org:443", "https://www.example.org"),
    ("http://127.0.0.1:5000/p/x", "http://127.0.0.1:5000"),
    ("https://[::1]:8443", "https://[::1]:8443"),
    ("ftp://example.org", None),
    ("www.example.org", None),
    ("https://example.org:99999", None),
])
def test_origin_of(url, origin):
    """URLs become origins as browsers write them in the Origin header."""
    assert origin_of(url) == origin


def test_trusted_origins_setting(tmp_path):
    """SIGN_TRUSTED_ORIGINS is a comma-separated list of origins; anything else stops start-up, naming it."""
    assert parse_origins(" https://www.example.org, https://act.example.org:8443/ ,", "X") == {
        "https://www.example.org", "https://act.example.org:8443"}
    assert parse_origins("", "X") == frozenset()
    for bad in ("www.example.org", "https://www.example.org/petition", "https://x.org?a=1", "javascript:alert(1)"):
        with pytest.raises(ConfigError) as raised:
            load_config(str(tmp_path), {"CRM_ENV": "testing", "SIGN_TRUSTED_ORIGINS": bad})
        assert raised.value.variable == "SIGN_TRUSTED_ORIGINS"


def test_staff_forms_refuse_cross_site_posts_too(app, client_as):
    """Staff forms keep their session token and are refused from another site whatever they carry."""
    organizer = client_as("organizer")
    response = organizer.post("/petitions/new", data=petition_form(),
                              headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example"})
    assert response.status_code == 403 and "sent from a page on another website" in response.text
    assert db.session.scalar(db.select(db.func.count()).select_from(Petition)) == 0
    response = organizer.post("/petitions/new", data=petition_form(), headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 302
    assert db.session.scalar(db.select(db.func.count()).select_from(Petition)) == 1


def test_one_click_unsubscribe_is_taken_from_anywhere(app):
    """RFC 8058's POST may come from a mail client's page on another site: the token in the URL authorises it."""
    supporter = factories.make_supporter()
    message = factories.make_message(factories.make_campaign(), supporter)
    client = app.test_client(use_cookies=False)
    response = client.post(f"/u/{make_unsubscribe_token(message.id)}", data={"List-Unsubscribe": "One-Click"},
                           headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://mail.example.com"})
    assert response.status_code == 200
    db.session.refresh(supporter)
    assert supporter.email_status == "unsubscribed"

"""Staff sign-in: passwords, throttling, safe redirects, cookies, CSRF and sign-out."""

import pytest

from crm.models import staff as staff_model
from crm.urls import is_safe_next
from tests import factories


def login(client, email, password, **query):
    return client.post("/login", data={"email": email, "password": password}, query_string=query)


def test_sign_in_and_out(app, client):
    """A correct password opens the dashboard; signing out closes it again."""
    user = factories.make_staff("organizer")
    response = login(client, user.email.upper(), factories.PASSWORD)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert b"Dashboard" in client.get("/").data
    client.post("/logout")
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused_with_a_message(app, client):
    """A wrong password says so and does not sign in."""
    user = factories.make_staff("admin")
    response = login(client, user.email, "wrong-password")
    assert response.status_code == 401
    assert b"do not match" in response.data
    assert client.get("/").status_code == 302


def test_password_is_hashed_with_scrypt(app):
    """No plain passwords in the database."""
    user = factories.make_staff("admin")
    assert user.password_hash.startswith("scrypt:")
    assert factories.PASSWORD not in user.password_hash


def test_deactivated_staff_cannot_sign_in(app, client):
    """Deactivation locks the account out even with the right password."""
    user = factories.make_staff("organizer", active=False)
    assert login(client, user.email, factories.PASSWORD).status_code == 401


def login_from(client, ip, email, password):
    return client.post("/login", data={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip})


def test_account_is_throttled_after_ten_failures_from_one_address(app, client):
    """The eleventh try from the same address is refused even with the right password, with a clear message."""
    user = factories.make_staff("admin")
    for _ in range(10):
        assert login(client, user.email, "nope").status_code == 401
    response = login(client, user.email, factories.PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts" in response.data


def test_guessing_from_elsewhere_does_not_lock_the_owner_out(app):
    """Ten wrong passwords from an attacker's address lock that address out of the account, not its owner."""
    user = factories.make_staff("admin")
    for _ in range(10):
        login_from(app.test_client(), "198.51.100.66", user.email, "nope")
    assert login_from(app.test_client(), "198.51.100.66", user.email, factories.PASSWORD).status_code == 429
    assert login_from(app.test_client(), "203.0.113.5", user.email, factories.PASSWORD).status_code == 302


@pytest.mark.parametrize("setting", ["LOGIN_ACCOUNT_MAX_FAILURES", "LOGIN_IP_MAX_FAILURES"])
def test_guessing_spread_wide_meets_a_ceiling(make_app, setting):
    """Many addresses guessing one account, or one address guessing many accounts, meet their ceiling."""
    app = make_app(**{setting: 5})
    many_addresses = setting == "LOGIN_ACCOUNT_MAX_FAILURES"
    with app.app_context():
        user = factories.make_staff("admin")
        for n in range(5):
            ip, email = ((f"198.51.100.{n}", user.email) if many_addresses
                         else ("198.51.100.9", f"nobody{n}@example.org"))
            assert login_from(app.test_client(), ip, email, "nope").status_code == 401
        # The account is closed to every address; the address to every account, but the account opens elsewhere.
        assert login_from(app.test_client(), "198.51.100.9", user.email, factories.PASSWORD).status_code == 429
        elsewhere = login_from(app.test_client(), "203.0.113.5", user.email, factories.PASSWORD).status_code
        assert elsewhere == (429 if many_addresses else 302)


def test_success_clears_the_failures_from_its_address(app, client):
    """A correct sign-in resets the failures counted for the account from that address."""
    user = factories.make_staff("admin")
    for _ in range(9):
        login(client, user.email, "nope")
    assert login(client, user.email, factories.PASSWORD).status_code == 302
    client.post("/logout")
    for _ in range(9):
        assert login(client, user.email, "nope").status_code == 401  # counting from zero again


@pytest.mark.parametrize("case", ["known, wrong password", "unknown address", "deactivated, right password"])
def test_every_failed_sign_in_costs_one_password_hash(app, client, monkeypatch, case):
    """Known, unknown and deactivated addresses all run scrypt once, so timing tells no account apart."""
    user = factories.make_staff("organizer", active=case != "deactivated, right password")
    checks = []
    real = staff_model.check_password_hash
    monkeypatch.setattr(staff_model, "check_password_hash", lambda *args: checks.append(args[0][:7]) or real(*args))
    email, password = {"known, wrong password": (user.email, "nope"),
                       "unknown address": ("nobody@example.org", "nope"),
                       "deactivated, right password": (user.email, factories.PASSWORD)}[case]
    assert login(client, email, password).status_code == 401
    assert checks == ["scrypt:"]


@pytest.mark.parametrize("target,safe", [
    ("/supporters/", True), ("/petitions/1?x=1", True), ("//evil.example", False),
    ("https://evil.example/", False), ("/\\evil.example", False), ("javascript:alert(1)", False),
    ("", False), (None, False), ("/ok\n", False),
])
def test_is_safe_next(target, safe):
    """Only same-site paths are accepted as a post-login destination."""
    assert is_safe_next(target) is safe


def test_login_follows_a_safe_next_and_ignores_an_unsafe_one(app):
    """next=/supporters/ is honoured; next=//evil.example goes to the dashboard."""
    user = factories.make_staff("analyst")
    good = login(app.test_client(), user.email, factories.PASSWORD, next="/supporters/")
    assert good.headers["Location"] == "/supporters/"
    bad = login(app.test_client(), user.email, factories.PASSWORD, next="//evil.example/")
    assert bad.headers["Location"] == "/"


def test_forms_require_a_csrf_token(make_app):
    """With CSRF on (the default), a form post without the token gets the 400 page."""
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        user = factories.make_staff("admin")
        response = app.test_client().post("/login", data={"email": user.email, "password": factories.PASSWORD})
    assert response.status_code == 400
    assert b"Reload the page" in response.data


def test_csrf_token_from_the_form_is_accepted(make_app):
    """The token rendered into the login form lets the same client sign in."""
    import re

    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        user = factories.make_staff("admin")
        client = app.test_client()
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        response = client.post("/login", data={"email": user.email, "password": factories.PASSWORD,
                                               "csrf_token": token})
    assert response.status_code == 302


def test_session_cookie_flags(make_app):
    """The session cookie is HttpOnly and SameSite=Lax, and Secure in production."""
    prod = make_app(CRM_ENV="production")
    assert prod.config["SESSION_COOKIE_SECURE"] is True
    app = make_app()
    with app.app_context():
        user = factories.make_staff("admin")
        response = login(app.test_client(), user.email, factories.PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_logout_needs_post(app, client_as):
    """A GET (a prefetch, an image tag) cannot sign anyone out."""
    client = client_as("analyst")
    assert client.get("/logout").status_code == 405
    assert client.get("/").status_code == 200

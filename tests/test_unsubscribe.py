"""Unsubscribe links and RFC 8058 one-click: tokens, the pages, the service's rules."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from campaigns import optout
from campaigns.tokens import (
    SALT,
    is_test_unsubscribe_token,
    make_unsubscribe_token,
    read_unsubscribe_token,
    test_unsubscribe_url,
    unsubscribe_url,
)
from crm.extensions import db
from crm.models import ConsentEvent, EngagementEvent, Message, Supporter
from crm.supporters.consent import record_consent
from crm.supporters.service import erase_supporter
from crm.supporters.suppression import suppress
from tests import factories

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
HEADERS = {"X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


@pytest.fixture
def app(make_app):
    """CSRF on, as in production: one-click must work without it, the button must not."""
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        yield app


@pytest.fixture
def sent(app):
    """A subscribed supporter and the sent message whose link they follow."""
    supporter = factories.make_supporter(email="jane.doe@example.org")
    campaign = factories.make_campaign()
    message = factories.make_message(campaign, supporter, status="sent")
    return message


def path(message_or_token) -> str:
    token = message_or_token if isinstance(message_or_token, str) else make_unsubscribe_token(message_or_token.id)
    return f"/u/{token}"


def bare_client(app):
    """A client like a mailbox provider's one-click POST: no cookies at all."""
    return app.test_client(use_cookies=False)


def confirm_page_token(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return CSRF_FIELD.search(response.text).group(1)


def events(supporter_id: int, action: str | None = None) -> list[ConsentEvent]:
    query = db.select(ConsentEvent).where(ConsentEvent.supporter_id == supporter_id).order_by(ConsentEvent.id)
    if action:
        query = query.where(ConsentEvent.action == action)
    return list(db.session.scalars(query))


def unsubscribe_events(message_id: int) -> int:
    return len(db.session.scalars(db.select(EngagementEvent).where(
        EngagementEvent.message_id == message_id, EngagementEvent.kind == "unsubscribe")).all())


def status_of(supporter_id: int) -> str:
    db.session.expire_all()
    return db.session.get(Supporter, supporter_id).email_status


def unsubscribe_through_page(client, message) -> object:
    url = path(message)
    return client.post(url, data={"csrf_token": confirm_page_token(client, url)})


# --- tokens ------------------------------------------------------------------------------------

def test_token_round_trip_and_url(app):
    """A token reads back as its message id; the URL is BASE_URL + /u/ + token, whatever BASE_URL's slash."""
    token = make_unsubscribe_token(12345)
    assert read_unsubscribe_token(token) == 12345
    assert unsubscribe_url(12345) == f"https://crm.example.org/u/{token}"
    app.config["BASE_URL"] = "https://crm.example.org/"
    assert unsubscribe_url(12345) == f"https://crm.example.org/u/{token}"


def test_tampered_truncated_or_foreign_tokens_read_as_none(app):
    """Flip a character, cut it short, sign with another key or salt: None, never an exception."""
    token = make_unsubscribe_token(42)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    payload_flipped = ("N" if token[0] != "N" else "M") + token[1:]
    assert read_unsubscribe_token(flipped) is None
    assert read_unsubscribe_token(payload_flipped) is None
    assert read_unsubscribe_token(token[:-3]) is None
    assert read_unsubscribe_token(token.split(".")[0]) is None
    assert read_unsubscribe_token(URLSafeSerializer("another-secret-key", salt=SALT).dumps(42)) is None
    assert read_unsubscribe_token(URLSafeSerializer(app.config["SECRET_KEY"], salt="other").dumps(42)) is None
    for junk in ("", ".", "x" * 10_000, "é.ü", "\ud800", "null", None, 42):
        assert read_unsubscribe_token(junk) is None


def test_rotated_secret_key_keeps_old_links_working(app):
    """Tokens never expire: after a key rotation, links signed with the old key still read back."""
    token = make_unsubscribe_token(7)
    app.config["SECRET_KEY_FALLBACKS"] = [app.config["SECRET_KEY"]]
    app.config["SECRET_KEY"] = "a-brand-new-secret-key"
    assert read_unsubscribe_token(token) == 7
    assert read_unsubscribe_token(make_unsubscribe_token(7)) == 7


def test_token_carries_no_address(app, sent):
    """The token holds only the message id: nothing in it, even base64-decoded, gives the address away."""
    import base64

    token = make_unsubscribe_token(sent.id)
    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert decoded == str(sent.id)
    for text in (token, unsubscribe_url(sent.id).split("/u/")[1], decoded):
        assert "jane" not in text.lower() and "@" not in text and "example" not in text


def test_test_send_token_is_recognised_and_unsubscribes_nobody(app, client, sent):
    """A test send's link says so, on GET, button POST and one-click, and changes nothing."""
    url = test_unsubscribe_url()
    token = url.rsplit("/", 1)[1]
    assert url.startswith("https://crm.example.org/u/")
    assert is_test_unsubscribe_token(token) and read_unsubscribe_token(token) is None
    response = client.get(f"/u/{token}")
    assert response.status_code == 200 and "test message" in response.text
    assert bare_client(app).post(f"/u/{token}", data=ONE_CLICK).status_code == 200
    assert status_of(sent.supporter_id) == "subscribed"


def test_message_ids_must_be_positive_integers(app):
    """Signing anything but a message id is a programming error, caught at once."""
    for bad in (0, -1, True, "12", 1.5):
        with pytest.raises(ValueError):
            make_unsubscribe_token(bad)


# --- the confirmation page ---------------------------------------------------------------------

def test_get_shows_one_masked_button_and_changes_nothing(app, client, sent):
    """Link scanners prefetch: GET only shows the button, with the address masked, and private headers."""
    response = client.get(path(sent))
    assert response.status_code == 200
    assert "Unsubscribe ja***@ex***.org from periodic email updates" in response.text
    assert "jane.doe" not in response.text and "example.org" not in response.text
    assert response.text.count("<button") == 1 and 'method="post"' in response.text
    for name, value in HEADERS.items():
        assert response.headers[name] == value
    assert client.head(path(sent)).status_code == 200
    assert status_of(sent.supporter_id) == "subscribed"
    assert events(sent.supporter_id, "opt_out") == []


def test_confirm_post_with_csrf_unsubscribes_with_campaign_and_source(app, client, sent):
    """The button unsubscribes at once, records source unsubscribe_link with the campaign, offers undo."""
    response = unsubscribe_through_page(client, sent)
    assert response.status_code == 200
    assert "has been unsubscribed" in response.text and "Undo: resubscribe me" in response.text
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert status_of(sent.supporter_id) == "unsubscribed"
    (event,) = events(sent.supporter_id, "opt_out")
    assert (event.source, event.campaign_id) == ("unsubscribe_link", sent.campaign_id)
    assert event.wording == "Unsubscribe ja***@ex***.org from periodic email updates"
    assert event.ip == "127.0.0.1"
    assert unsubscribe_events(sent.id) == 1


def test_confirm_post_works_over_https_without_a_referer(make_app):
    """The pages send no Referer (no-referrer), so the HTTPS strict-Referer CSRF rule must not apply."""
    app = make_app(WTF_CSRF_ENABLED=True, WTF_CSRF_SSL_STRICT=True)
    with app.app_context():
        message = factories.make_message(factories.make_campaign(), factories.make_supporter())
        client = app.test_client()
        url = "https://crm.example.org" + path(message)
        response = client.post(url, data={"csrf_token": confirm_page_token(client, url)})
        assert response.status_code == 200
        assert status_of(message.supporter_id) == "unsubscribed"


def test_post_without_csrf_token_or_one_click_body_is_refused(app, client, sent):
    """A bare POST (or a forged one with a wrong token) is a 400 and changes nothing."""
    client.get(path(sent))  # a session exists, but the POST carries no token
    for data in ({}, {"csrf_token": "forged"}, {"List-Unsubscribe": "Two-Clicks"}):
        response = client.post(path(sent), data=data)
        assert response.status_code == 400
        assert "press the button again" in response.text.lower()
    assert status_of(sent.supporter_id) == "subscribed"
    assert events(sent.supporter_id, "opt_out") == [] and unsubscribe_events(sent.id) == 0


def test_already_unsubscribed_page_says_so(app, client, sent):
    """After unsubscribing, the link's GET says so instead of offering the button again."""
    unsubscribe_through_page(client, sent)
    response = client.get(path(sent))
    assert response.status_code == 200
    assert "already unsubscribed" in response.text and "from periodic email updates</button>" not in response.text


# --- RFC 8058 one-click ------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_without_cookies_or_csrf_unsubscribes(app, sent, encoding):
    """The provider's POST (either encoding, no cookies, no CSRF token) unsubscribes; 200, no redirect."""
    content_type = "multipart/form-data" if encoding == "multipart" else "application/x-www-form-urlencoded"
    response = bare_client(app).post(path(sent), data=ONE_CLICK, content_type=content_type)
    assert response.status_code == 200
    assert "Location" not in response.headers and "Set-Cookie" not in response.headers
    assert response.mimetype == "text/plain"
    assert status_of(sent.supporter_id) == "unsubscribed"
    (event,) = events(sent.supporter_id, "opt_out")
    assert (event.source, event.campaign_id) == ("one_click", sent.campaign_id)
    assert unsubscribe_events(sent.id) == 1


def test_one_click_raw_body_as_providers_send_it(app, sent):
    """The exact bytes of RFC 8058's example body are understood."""
    response = bare_client(app).post(path(sent), data=b"List-Unsubscribe=One-Click",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert status_of(sent.supporter_id) == "unsubscribed"


def test_repeat_posts_add_no_second_event(app, client, sent):
    """One-click retried, then the button pressed: still one opt-out and one engagement event."""
    for _ in range(3):
        assert bare_client(app).post(path(sent), data=ONE_CLICK).status_code == 200
    response = unsubscribe_through_page(client, sent)
    assert response.status_code == 200 and "already unsubscribed" in response.text
    assert len(events(sent.supporter_id, "opt_out")) == 1
    assert unsubscribe_events(sent.id) == 1


def test_unsubscribe_cancels_queued_messages_in_other_campaigns(app, sent):
    """Effective immediately: the supporter's queued messages anywhere become suppressed; sent ones stay."""
    supporter = db.session.get(Supporter, sent.supporter_id)
    queued = factories.make_message(factories.make_campaign(status="sending"), supporter, status="queued")
    done = factories.make_message(factories.make_campaign(status="sent"), supporter, status="sent")
    someone_else = factories.make_message(db.session.get(Message, queued.id).campaign,
                                          factories.make_supporter(), status="queued")
    ids = {"queued": queued.id, "done": done.id, "other": someone_else.id, "clicked": sent.id}
    assert bare_client(app).post(path(sent), data=ONE_CLICK).status_code == 200
    db.session.expire_all()
    assert {name: db.session.get(Message, i).status for name, i in ids.items()} == {
        "queued": "suppressed", "done": "sent", "other": "queued", "clicked": "sent"}


def test_bouncing_supporter_who_unsubscribes_is_recorded_but_cannot_be_undone_to_subscribed(app, client, sent):
    """Their withdrawal is kept (staff could otherwise revive the bounce); the undo never clears a bounce."""
    supporter = db.session.get(Supporter, sent.supporter_id)
    record_consent(supporter, "bounce", "test")
    db.session.commit()
    response = unsubscribe_through_page(client, sent)
    assert response.status_code == 200 and "Undo" not in response.text
    assert status_of(sent.supporter_id) == "unsubscribed"
    assert optout.resubscribe_by_message(sent.id).state == optout.UNDO_REFUSED
    assert status_of(sent.supporter_id) == "unsubscribed"


# --- undo --------------------------------------------------------------------------------------

def undo(client, message):
    page = unsubscribe_through_page(client, message)
    return client.post(path(message) + "/resubscribe", data={"csrf_token": CSRF_FIELD.search(page.text).group(1)})


def test_undo_resubscribes_with_its_own_source_and_campaign(app, client, sent):
    """The undo button resubscribes, recording resubscribe / unsubscribe_undo / the campaign."""
    response = undo(client, sent)
    assert response.status_code == 200 and "Welcome back" in response.text
    assert status_of(sent.supporter_id) == "subscribed"
    last = events(sent.supporter_id)[-1]
    assert (last.action, last.source, last.campaign_id) == ("resubscribe", "unsubscribe_undo", sent.campaign_id)
    assert "resubscribe me" in last.wording and "Test Org" in last.wording
    again = client.post(path(sent) + "/resubscribe", data={"csrf_token": confirm_page_token(client, path(sent))})
    assert again.status_code == 200 and "You are subscribed" in again.text
    assert len(events(sent.supporter_id, "resubscribe")) == 1


def test_undo_needs_a_csrf_token(app, client, sent):
    """A forged undo POST is refused and leaves the person unsubscribed."""
    unsubscribe_through_page(client, sent)
    assert client.post(path(sent) + "/resubscribe").status_code == 400
    assert status_of(sent.supporter_id) == "unsubscribed"


@pytest.mark.parametrize("later", ["bounce", "complaint", "suppressed", "erased", "other_campaign", "staff"])
def test_undo_refused_after_anything_happened_since(app, client, sent, later):
    """Only the opt-out made through this message's link, still the latest event, can be undone."""
    page = unsubscribe_through_page(client, sent)
    csrf_token = CSRF_FIELD.search(page.text).group(1)
    supporter = db.session.get(Supporter, sent.supporter_id)
    if later in ("bounce", "complaint"):
        record_consent(supporter, later, "test")
        db.session.commit()
    elif later == "suppressed":
        suppress(supporter.email, reason="test")
        db.session.commit()
    elif later == "erased":
        erase_supporter(supporter, factories.make_staff("admin").id)
    elif later == "other_campaign":
        other = factories.make_message(factories.make_campaign(), supporter)
        record_consent(supporter, "resubscribe", "staff:1")
        db.session.commit()
        assert bare_client(app).post(path(other), data=ONE_CLICK).status_code == 200
    elif later == "staff":
        record_consent(supporter, "opt_out", "staff:1", reason="asked by phone")
        db.session.commit()
    before = status_of(sent.supporter_id)
    response = client.post(path(sent) + "/resubscribe", data={"csrf_token": csrf_token})
    assert response.status_code in (200, 409) and "Welcome back" not in response.text
    assert status_of(sent.supporter_id) == before != "subscribed"
    assert all(e.source != "unsubscribe_undo" for e in events(sent.supporter_id))


# --- erased supporters, deleted messages, garbage ----------------------------------------------

def test_erased_supporter_gets_a_friendly_page(app, client, sent):
    """Erased (row anonymised) or gone (supporter_id NULL): a calm page, never a 500."""
    csrf_token = confirm_page_token(client, path(sent))
    erase_supporter(db.session.get(Supporter, sent.supporter_id), factories.make_staff("admin").id)
    orphan = factories.make_message(factories.make_campaign(), factories.make_supporter(),
                                    supporter_id=None, email=None)
    for message in (sent, orphan):
        page = client.get(path(message))
        assert page.status_code == 200 and "no longer on our mailing list" in page.text
        posted = client.post(path(message), data={"csrf_token": csrf_token})
        assert posted.status_code == 200 and "no longer on our mailing list" in posted.text
        assert bare_client(app).post(path(message), data=ONE_CLICK).status_code == 200
        assert client.post(path(message) + "/resubscribe", data={"csrf_token": csrf_token}).status_code == 200
        assert optout.unsubscribe_by_message(message.id, "one_click").state == optout.ERASED


def test_bad_token_and_deleted_message_get_the_same_400_page(app, client, sent):
    """A tampered token and a valid one whose message was deleted are indistinguishable."""
    csrf_token = confirm_page_token(client, path(sent))
    good = make_unsubscribe_token(sent.id)
    gone = factories.make_message(factories.make_campaign(), factories.make_supporter())
    gone_token = make_unsubscribe_token(gone.id)
    db.session.delete(gone)
    db.session.commit()
    bodies, refusals = set(), set()
    for token in (good[:-1] + ("A" if good[-1] != "A" else "B"), "no-such-thing", gone_token):
        answers = [client.get(f"/u/{token}"), bare_client(app).post(f"/u/{token}", data=ONE_CLICK),
                   client.post(f"/u/{token}", data={"csrf_token": csrf_token}),
                   client.post(f"/u/{token}/resubscribe", data={"csrf_token": csrf_token})]
        for response in answers:
            assert response.status_code == 400
            assert response.headers["X-Robots-Tag"] == "noindex"
            bodies.add(response.text)
        # Without a CSRF token the button POST is refused before the token is even looked at.
        refused = bare_client(app).post(f"/u/{token}")
        assert refused.status_code == 400
        refusals.add(refused.text.replace(token, "TOKEN"))
    assert len(bodies) == 1 and len(refusals) == 1
    assert "could not read this link" in bodies.pop()
    assert status_of(sent.supporter_id) == "subscribed"


def test_masked_address_reveals_little():
    """Two characters of the name and of the domain at most, never more than half of either."""
    assert optout.masked_address("jane.doe@example.org") == "ja***@ex***.org"
    assert optout.masked_address("jo@ab.co.uk") == "j***@ab***.uk"
    assert optout.masked_address("a@b.org") == "***@***.org"
    assert optout.masked_address("x@localhost") == "***@lo***"
    for junk in (None, "", "no-at-sign", "@example.org", "name@"):
        assert optout.masked_address(junk) == "***"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(min_size=1, max_size=400), body=st.one_of(st.none(), st.binary(max_size=300), st.dictionaries(
    st.text(max_size=20), st.text(max_size=40), max_size=3)),
    method=st.sampled_from(["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE"]),
    content_type=st.sampled_from([None, "application/x-www-form-urlencoded", "multipart/form-data",
                                  "multipart/form-data; boundary=x", "application/json", "text/plain; charset=ü"]),
    suffix=st.sampled_from(["", "/resubscribe"]))
def test_no_input_makes_the_pages_fail(app, token, body, method, content_type, suffix):
    """Any token, method, body or content type: a 2xx/4xx answer with the private headers, never a 500."""
    headers = {"Content-Type": content_type} if content_type and method not in ("GET", "HEAD") else {}
    response = bare_client(app).open(f"/u/{quote(token, safe='')}{suffix}", method=method,
                                     data=body if method not in ("GET", "HEAD") else None, headers=headers)
    assert response.status_code < 500
    assert response.headers["Cache-Control"] == "no-store"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))))
def test_token_reader_never_raises(token):
    """Whatever arrives as a token reads as None (outside a request too, in an app context)."""
    from flask import Flask

    flask_app = Flask(__name__)
    flask_app.config["SECRET_KEY"] = "k"
    with flask_app.app_context():
        assert read_unsubscribe_token(token) is None


def test_odd_requests_get_answers_not_errors(app, sent):
    """Huge and unicode tokens, HEAD, OPTIONS, broken multipart, JSON, no body: all answered, none a 500."""
    client = bare_client(app)
    good = path(sent)
    requests = [
        ("GET", "/u/" + "x" * 100_000, {}), ("POST", "/u/" + "x" * 100_000, {"data": ONE_CLICK}),
        ("GET", "/u/ünïcödé✓", {}), ("POST", "/u/ünïcödé✓/resubscribe", {}),
        ("HEAD", good, {}), ("OPTIONS", good, {}), ("PUT", good, {}), ("DELETE", good + "/resubscribe", {}),
        ("POST", good, {"data": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}),
        ("POST", good, {"data": b"--", "headers": {"Content-Type": "multipart/form-data"}}),
        ("POST", good, {"json": {"List-Unsubscribe": "One-Click"}}),
        ("POST", good, {"data": b"\xff\xfe List-Unsubscribe=One-Click%zz",
                        "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=bogus"}}),
        ("POST", good, {}),
    ]
    for method, url, kwargs in requests:
        response = client.open(url, method=method, **kwargs)
        assert response.status_code < 500, (method, url[:40], kwargs)
        assert response.headers["X-Robots-Tag"] == "noindex"
    assert status_of(sent.supporter_id) == "subscribed"


def test_concurrent_one_click_posts_record_one_opt_out(app, sent):
    """Providers retry and people double-press: simultaneous POSTs still make one consent event."""
    from concurrent.futures import ThreadPoolExecutor

    url, supporter_id, message_id = path(sent), sent.supporter_id, sent.id
    db.session.commit()  # end this thread's transaction; each request runs in its own app context

    def post(_):
        return bare_client(app).post(url, data=ONE_CLICK).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert set(pool.map(post, range(12))) == {200}
    assert status_of(supporter_id) == "unsubscribed"
    assert len(events(supporter_id, "opt_out")) == 1
    assert unsubscribe_events(message_id) == 1

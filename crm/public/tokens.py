"""CSRF for the public sign form: a signed double-submit token, with no server-side session.

The form at /p/<slug> used Flask-WTF's token, which lives in Flask's session cookie: every
view of the busiest page in the app wrote a session (JSON, zlib, an HMAC) and every POST
read it back. This module gives the same protection without a session:

- a cookie (SIGN_COOKIE; `__Host-` prefixed whenever cookies are Secure) holds a random
  nonce, 128 bits from `secrets`, set by the first form view that finds none. It is
  HttpOnly and SameSite=Lax, so a page on another site can neither read it nor make the
  browser send it with a cross-site POST;
- the form carries `issued.mac`, where mac = HMAC-SHA256(key, nonce | petition id | issued)
  and key is derived from SECRET_KEY for this purpose only;
- a POST is accepted only when its form token is a valid MAC over the nonce in the cookie
  that came with it, for this petition, issued at most SIGN_TOKEN_MAX_AGE seconds ago.

Why this is as safe as the session token. A forged cross-site POST arrives without the
cookie (SameSite=Lax), so no token can match it. An attacker who loads the page themselves
gets a token for *their* nonce, useless in a victim's browser, whose cookie holds another
nonce; without SECRET_KEY they cannot make a MAC for the victim's nonce, and they cannot
read the victim's page (same-origin policy). The one attack left to double-submit schemes,
planting a known nonce in the victim's cookie jar from a sibling subdomain, is closed by the
`__Host-` prefix in production (such a cookie can only be set by this exact host, over
HTTPS), which the session cookie never had. Tokens are bound to one petition and expire.
As with Flask-WTF, WTF_CSRF_ENABLED=False (the tests' setting) turns the check off.

Staff forms keep Flask-WTF's session token; the embed form keeps its own cookieless form
token (see crm.public.views), because a third-party iframe gets no first-party cookie.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import time

from flask import current_app, request

SIGN_COOKIE = "sign_csrf"
SIGN_TOKEN_MAX_AGE = 24 * 60 * 60  # a form left open overnight is refused, and re-shown with a fresh token
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16)
_KEY_PURPOSE = b"crm.public.tokens: petition sign form"
_ISSUED, _NEW_NONCE = "crm.sign_token_issued", "crm.sign_nonce"


def _key() -> bytes:
    key = current_app.extensions.get("sign_token_key")
    if key is None:
        secret = current_app.config["SECRET_KEY"]
        secret = secret.encode() if isinstance(secret, str) else secret
        key = current_app.extensions["sign_token_key"] = hmac.digest(secret, _KEY_PURPOSE, "sha256")
    return key


def _mac(nonce: str, petition_id: int, issued: str) -> str:
    digest = hmac.digest(_key(), f"{nonce}|{petition_id}|{issued}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def cookie_name() -> str:
    """`__Host-sign_csrf` when cookies are Secure (production), else `sign_csrf` (plain-HTTP dev and tests)."""
    return ("__Host-" if current_app.config.get("SESSION_COOKIE_SECURE") else "") + SIGN_COOKIE


def _cookie_nonce() -> str | None:
    nonce = request.cookies.get(cookie_name())
    return nonce if nonce is not None and _NONCE_RE.fullmatch(nonce) else None


def issue(petition_id: int) -> str:
    """A form token for `petition_id`, bound to this browser's nonce (a new one is set if it has none)."""
    # Per-request state in the WSGI environ rather than in g, which lives as long as the app
    # context (one request in production, a whole test in the test suite).
    environ = request.environ
    environ[_ISSUED] = True  # finish_response() marks the page no-store
    nonce = _cookie_nonce() or environ.get(_NEW_NONCE)
    if nonce is None:
        nonce = environ[_NEW_NONCE] = secrets.token_urlsafe(16)  # finish_response() sets the cookie
    issued = format(int(time.time()), "x")
    return f"{issued}.{_mac(nonce, petition_id, issued)}"


def is_valid(token: str | None, petition_id: int) -> bool:
    """Whether `token` came from a form this browser loaded for this petition, recently enough."""
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return True
    nonce = _cookie_nonce()
    if nonce is None or not token or len(token) > 100:
        return False
    issued, _, mac = token.partition(".")
    try:
        age = time.time() - int(issued, 16)
    except ValueError:
        return False
    if not -60 < age < SIGN_TOKEN_MAX_AGE:  # a minute's grace for clocks of several web servers
        return False
    return hmac.compare_digest(mac, _mac(nonce, petition_id, issued))


def finish_response(response):
    """after_request: keep pages with a token out of every cache; send a nonce issue() made up."""
    environ = request.environ
    if environ.get(_ISSUED):
        response.headers["Cache-Control"] = "no-store"  # a token belongs to one browser's cookie
    nonce = environ.get(_NEW_NONCE)
    if nonce is not None:
        cfg = current_app.config
        response.set_cookie(cookie_name(), nonce, path="/", secure=bool(cfg.get("SESSION_COOKIE_SECURE")),
                            httponly=True, samesite="Lax")
    return response

"""Cross-site request forgery refused by Fetch Metadata: a browser's cross-origin POST never acts.

What CSRF protection is for. A forged request borrows the authority a visitor's browser
carries without being asked: a staff member's session cookie. Staff forms keep Flask-WTF's
session-bound token for that. The public sign form carries no such authority: it is an
anonymous form that anyone may post from anywhere, with curl, without a browser, and a
per-visitor token cannot stop that (a bot fetches the page first). What must still be
stopped there is a hostile page making its visitors' browsers sign in their name, with
their IP address and user agent recorded as consent proof. That needs no token: the browser
says where a request comes from.

The check is that of Go's net/http CrossOriginProtection (Go 1.25), which follows the
Fetch Metadata guidance (https://web.dev/articles/fetch-metadata): for every request whose
method is not GET, HEAD or OPTIONS,

1. `Sec-Fetch-Site` present: `same-origin` (a page of this site) and `none` (the user acted
   directly: a bookmark, the address bar) are allowed; any other value (`same-site`,
   `cross-site`) is refused, unless `Origin` is a trusted origin;
2. no `Sec-Fetch-Site` (a browser from before 2023, or plain HTTP to a host other than
   localhost, where browsers leave it out): `Origin` present and not this app's origin is
   refused, unless it is trusted. This app's origin is BASE_URL's, or the one the request
   was addressed to (scheme and Host; for a browser, the same origin by definition, which
   keeps a development server reached by another name working);
3. neither header: allowed. Not a browser (or one too old to matter), so not a forgery:
   whatever sent it could send anything it liked, token or not.

Every modern browser sends `Sec-Fetch-Site` with every request, and a page cannot forge or
remove it (it is a forbidden header name for fetch() and XHR). The embed works inside a
third-party iframe because its form is our page: its POST is same-origin, whatever page
frames it.

Trusted origins (SIGN_TRUSTED_ORIGINS, e.g. the organisation's own website posting its own
copy of the petition form) are accepted from any of the paths above. Views that must take
cross-origin POSTs (the RFC 8058 one-click unsubscribe, which a mail client may send from
anywhere) are marked @allow_cross_origin.

What this buys: the public petition, embed and thank-you pages hold nothing specific to a
visitor, set no cookie, and can be cached by a CDN or a proxy (crm.public.pages). The honeypot
and the per-IP limit (crm.public.throttle) still stand against scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from flask import Flask, current_app, request
from werkzeug.exceptions import Forbidden

from crm.config import origin_of
from crm.errors import render_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})


class CrossOriginRequest(Forbidden):
    """A browser sent this request from a page of another site: refused (403), nothing done."""

    description = ("This form was sent from a page on another website, so nothing was done. "
                   "Open the page on this site and try again.")


def allow_cross_origin(view: Callable) -> Callable:
    """Mark a view as taking unsafe requests from any origin (it must authorise them itself)."""
    view.cross_origin_allowed = True
    return view


def is_cross_origin(method: str, fetch_site: str | None, origin: str | None, own_origins: Container[str],
                    trusted: Container[str]) -> bool:
    """Whether a request with these headers is a browser's cross-origin request to refuse."""
    if method in SAFE_METHODS:
        return False
    if fetch_site:
        return fetch_site not in ALLOWED_FETCH_SITES and origin not in trusted
    if not origin:
        return False
    return origin not in own_origins and origin not in trusted


class _OwnOrigins:
    """BASE_URL's origin, and (worked out only if asked) the one the current request was addressed to."""

    def __init__(self, base: str | None):
        self.base = base

    def __contains__(self, origin: str) -> bool:
        return origin == self.base or origin == origin_of(request.host_url)


def check() -> None:
    """Raise CrossOriginRequest if the current request is a cross-origin request to refuse."""
    if request.method in SAFE_METHODS:
        return
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "cross_origin_allowed", False):
        return
    headers = request.headers
    own, trusted = current_app.extensions["cross_origin"]
    if is_cross_origin(request.method, headers.get("Sec-Fetch-Site"), headers.get("Origin"), own, trusted):
        raise CrossOriginRequest()


def refused(exc: CrossOriginRequest):
    """The error page for a refused request (the public sign forms answer with the form instead)."""
    return render_error(exc.code, exc.description)


def init_app(app: Flask) -> None:
    own = _OwnOrigins(origin_of(app.config["BASE_URL"]))
    app.extensions["cross_origin"] = (own, app.config["SIGN_TRUSTED_ORIGINS"])
    app.before_request(check)
    app.register_error_handler(CrossOriginRequest, refused)

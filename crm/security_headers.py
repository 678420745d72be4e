"""Headers every answer carries: who may frame it, no MIME sniffing, no Referer to other sites.

Framing (clickjacking: a hostile page shows ours in a transparent frame and has staff click
"Send", "Cancel" or "Erase" without seeing it). Each answer says who may frame it, both in
CSP `frame-ancestors` (what current browsers obey) and in `X-Frame-Options` (older ones):

- staff pages and anything unrouted: nobody (`'none'`, DENY);
- public pages: this site only (`'self'`, SAMEORIGIN);
- a view marked @framed_by(...) says so itself: ANYONE for the petition embed, made to be
  framed by partner sites; NOBODY for the sign-in page, which is public but a staff page.

A view or blueprint that set its own framing header keeps it, and gets the other one to
match (the campaign preview, which staff pages frame, sends its own CSP with
`frame-ancestors 'self'`; the unsubscribe pages send DENY). This hook is registered before
the blueprints, so it runs after their own after_request hooks (Flask runs them in reverse
order) and sees what they set.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask, current_app, request

NOBODY, SELF, ANYONE = "'none'", "'self'", "*"
X_FRAME_OPTIONS = {NOBODY: "DENY", SELF: "SAMEORIGIN"}  # there is no X-Frame-Options for "anyone"
_FRAME_ANCESTORS = re.compile(r"(?:^|;)\s*frame-ancestors\s+([^;]*)", re.IGNORECASE)


def framed_by(ancestors: str) -> Callable:
    """Declare who may frame this view's answers: NOBODY, SELF or ANYONE."""
    if ancestors not in (NOBODY, SELF, ANYONE):
        raise ValueError(f"framed_by takes NOBODY, SELF or ANYONE, not {ancestors!r}")

    def mark(view: Callable) -> Callable:
        view.frame_ancestors = ancestors
        return view

    return mark


def frame_ancestors_for(endpoint: str | None) -> str:
    """Who may frame the answer of `endpoint`, by the rules above."""
    from crm.auth.permissions import PUBLIC, access_rule  # here: crm.auth's views import this module

    if endpoint is None:
        return NOBODY
    view = current_app.view_functions.get(endpoint)
    declared = getattr(view, "frame_ancestors", None)
    if declared is not None:
        return declared
    return SELF if access_rule(current_app, endpoint) == PUBLIC else NOBODY


def set_headers(response):
    """after_request: the framing pair, nosniff and a Referrer-Policy, without overriding a view's own."""
    headers = response.headers
    csp = headers.get("Content-Security-Policy")
    declared = _FRAME_ANCESTORS.search(csp) if csp else None
    xfo = headers.get("X-Frame-Options")
    if declared is not None:
        ancestors = declared.group(1).strip()
    elif xfo is not None:
        ancestors = NOBODY if xfo.upper() == "DENY" else SELF
    else:
        ancestors = frame_ancestors_for(request.endpoint)
    if declared is None:
        policy = f"frame-ancestors {ancestors}"
        headers["Content-Security-Policy"] = f"{csp.rstrip('; ')}; {policy}" if csp else policy
    if xfo is None and ancestors in X_FRAME_OPTIONS:
        headers["X-Frame-Options"] = X_FRAME_OPTIONS[ancestors]
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask) -> None:
    """Register the hook; call before the blueprints are registered (see the module's docstring)."""
    app.after_request(set_headers)

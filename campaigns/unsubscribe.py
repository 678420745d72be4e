"""Public unsubscribe pages: /u/<token> (confirm, then POST) and the RFC 8058 one-click POST.

GET never changes anything: link scanners and mail previewers fetch every URL in a message, so
the page only offers one button. POST /u/<token> is two different requests:

- RFC 8058 one-click (section 3): the mailbox provider POSTs the body `List-Unsubscribe=One-Click`
  (urlencoded or multipart) with no cookies and no authorisation, so there is no session and no
  CSRF token can exist: the signed, unguessable token in the URL is the authorisation. The view
  is therefore exempt from the global CSRF check, and it answers 200, never a redirect.
- the confirmation page's button, which carries the session-bound CSRF token checked here.

The pages send `Referrer-Policy: no-referrer` so the token never leaks to another site in a
Referer. That is why the button branch checks the token with validate_csrf() rather than
csrf.protect(): over HTTPS protect() also demands a same-origin Referer (WTF_CSRF_SSL_STRICT),
which browsers never send from a no-referrer page, so every real unsubscribe would fail.

Nothing here may answer 500, and no answer tells a malformed token from one whose message is
gone. Logs name message and supporter ids, never addresses.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, render_template, request
from flask_wtf.csrf import ValidationError, validate_csrf

from campaigns import optout
from campaigns.tokens import is_test_unsubscribe_token, read_unsubscribe_token
from crm.auth.permissions import public
from crm.cross_origin import allow_cross_origin
from crm.extensions import csrf

log = logging.getLogger(__name__)

bp = Blueprint("unsubscribe", __name__)

PRIVATE_HEADERS = {
    "X-Robots-Tag": "noindex",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@bp.after_app_request
def private_headers(response):
    """Every answer under /u/, errors included: not indexed, not cached, not framed, no Referer."""
    if request.path.startswith("/u/"):
        response.headers.update(PRIVATE_HEADERS)
    return response


@bp.route("/u/<token>", methods=["GET"])
@public
def confirm(token: str):
    if is_test_unsubscribe_token(token):
        return _test_page()
    message_id = read_unsubscribe_token(token)
    outcome = optout.describe_unsubscribe(message_id) if message_id else None
    if outcome is None or outcome.state == optout.MISSING:
        return _invalid_link()
    if outcome.state == optout.SUBSCRIBED:
        return render_template("unsubscribe/confirm.html", token=token, outcome=outcome,
                               button=optout.unsubscribe_wording(outcome.address))
    return _done_page(token, outcome)


@bp.route("/u/<token>", methods=["POST"])
@public
@csrf.exempt  # the one-click POST has no session; the button branch checks CSRF itself
@allow_cross_origin  # a mail client may send the one-click POST from anywhere; the token authorises it
def unsubscribe(token: str):
    one_click = _is_one_click()
    # The button's CSRF check comes first, so a forged cross-site POST learns nothing about the token.
    if not one_click and not _csrf_valid():
        return _form_expired(token)
    if is_test_unsubscribe_token(token):
        return _plain("This was a test message: there is nothing to unsubscribe.\n") if one_click else _test_page()
    message_id = read_unsubscribe_token(token)
    if message_id is None:
        return _invalid_link()
    outcome = optout.unsubscribe_by_message(
        message_id, "one_click" if one_click else "unsubscribe_link",
        ip=request.remote_addr, user_agent=request.user_agent.string,
    )
    if outcome.state == optout.MISSING:
        return _invalid_link()
    if one_click:
        # RFC 8058: the provider reads only the status; 200 with a short body, never a redirect.
        return _plain("You have been unsubscribed.\n")
    return _done_page(token, outcome)


@bp.route("/u/<token>/resubscribe", methods=["POST"])
@public
@csrf.exempt  # checked by hand, like the button above (the global check would answer in the staff look)
def resubscribe(token: str):
    if not _csrf_valid():
        return _form_expired(token)
    if is_test_unsubscribe_token(token):
        return _test_page()
    message_id = read_unsubscribe_token(token)
    if message_id is None:
        return _invalid_link()
    outcome = optout.resubscribe_by_message(message_id, ip=request.remote_addr,
                                            user_agent=request.user_agent.string)
    if outcome.state == optout.MISSING:
        return _invalid_link()
    status = 409 if outcome.state == optout.UNDO_REFUSED else 200
    return render_template("unsubscribe/resubscribed.html", token=token, outcome=outcome), status


def _is_one_click() -> bool:
    """Whether the body is RFC 8058's `List-Unsubscribe=One-Click` (urlencoded or multipart)."""
    # Werkzeug answers malformed or oversized bodies with an empty form (or a 413), never an error.
    return request.form.get("List-Unsubscribe", "").strip().lower() == "one-click"


def _csrf_valid() -> bool:
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return True
    try:
        validate_csrf(request.form.get(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")))
    except ValidationError:
        return False
    return True


def _done_page(token: str, outcome: optout.Outcome):
    return render_template("unsubscribe/unsubscribed.html", token=token, outcome=outcome,
                           undo_button=optout.UNDO_BUTTON, undo_explanation=optout.undo_explanation())


def _invalid_link():
    """The one answer for every token we cannot act on: tampered, truncated or its message gone."""
    return render_template("unsubscribe/invalid.html"), 400


def _form_expired(token: str):
    return render_template("unsubscribe/expired.html", token=token), 400


def _test_page():
    return render_template("unsubscribe/test.html")


def _plain(body: str):
    return body, 200, {"Content-Type": "text/plain; charset=utf-8"}

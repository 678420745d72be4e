"""The double opt-in link: /confirm/<token> shows one button; pressing it subscribes (crm.petitions.confirmation).

GET changes nothing (scanners fetch every link in a message). The POST carries no CSRF token,
like the sign form it completes: the signed token in the URL is the authority, and a browser's
cross-site POST is refused by Fetch Metadata (crm.cross_origin), so a hostile page cannot
confirm for its visitors. So the pages set no cookie. They are never cached, indexed or framed,
and send no Referer. A tampered link gets the same friendly 400 as the unsubscribe pages.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request

from campaigns.unsubscribe import PRIVATE_HEADERS
from crm.auth.permissions import public
from crm.extensions import csrf
from crm.petitions import confirmation

bp = Blueprint("confirm", __name__)


@bp.after_app_request
def private_headers(response):
    if request.path.startswith("/confirm/"):
        response.headers.update(PRIVATE_HEADERS)
    return response


@bp.route("/confirm/<confirm_token>", methods=["GET"])
@public
def page(confirm_token: str):
    confirmation_id = confirmation.read_confirm_token(confirm_token)
    state = confirmation.describe(confirmation_id) if confirmation_id else None
    if state is None or state.state == confirmation.MISSING:
        return render_template("unsubscribe/invalid.html"), 400
    return render_template("confirm/page.html", state=state, token=confirm_token)


@bp.route("/confirm/<confirm_token>", methods=["POST"])
@public
@csrf.exempt  # see the module docstring: the token authorises, Fetch Metadata refuses forgeries
def confirm(confirm_token: str):
    confirmation_id = confirmation.read_confirm_token(confirm_token)
    if confirmation_id is None:
        return render_template("unsubscribe/invalid.html"), 400
    state = confirmation.confirm(confirmation_id, ip=request.remote_addr, user_agent=request.user_agent.string)
    if state.state == confirmation.MISSING:
        return render_template("unsubscribe/invalid.html"), 400
    return render_template("confirm/page.html", state=state, token=confirm_token)

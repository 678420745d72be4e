"""Staff pages for campaigns: list, editor, preview, test send, schedule, send, progress."""

from __future__ import annotations

from flask import Blueprint, render_template

from crm.auth.permissions import requires

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns")


@bp.route("/")
@requires("read")
def index():
    return render_template("campaigns/index.html")

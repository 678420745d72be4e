from flask import Response, abort, current_app, flash, redirect, render_template, url_for

from crm.auth.permissions import requires
from crm.filters import outbox_enabled
from crm.outbox import bp, store


def _directory() -> str:
    if not outbox_enabled():
        abort(404)
    return current_app.config["OUTBOX_DIR"]


@bp.route("/")
@requires("read")
def index():
    return render_template("outbox/index.html", entries=store.list_messages(_directory()))


@bp.route("/<key>")
@requires("read")
def show(key: str):
    entry = store.get_message(_directory(), key) or abort(404)
    return render_template("outbox/show.html", entry=entry)


@bp.route("/<key>/raw")
@requires("read")
def raw(key: str):
    data = store.raw_message(_directory(), key)
    if data is None:
        abort(404)
    return Response(data, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})


@bp.route("/clear", methods=["POST"])
@requires("write")
def clear():
    store.clear(_directory())
    flash("Outbox emptied.", "info")
    return redirect(url_for("outbox.index"))

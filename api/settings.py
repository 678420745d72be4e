"""Staff pages for the API: admins make and revoke keys under Settings; staff read the API's documentation."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import RadioField, StringField
from wtforms.fields import SelectChoice

from api import keys
from api.auth import HEADER
from crm.auth.permissions import requires
from crm.extensions import db
from crm.forms import ActionForm, apply_errors, check_all, require_action_form
from crm.models import ApiKey

bp = Blueprint("api_settings", __name__)


class KeyForm(FlaskForm):
    label = StringField("Label (what will use it, e.g. “Website sign-up form”)")
    scope = RadioField("Scope", choices=[SelectChoice(k, v) for k, v in keys.SCOPE_LABELS.items()], default="read",
                       validate_choice=False)


def _page(form: KeyForm, status: int = 200, token: str | None = None, created: ApiKey | None = None):
    return render_template("api/keys.html", form=form, keys=keys.list_keys(), action_form=ActionForm(),
                           token=token, created=created, scopes=keys.SCOPE_LABELS, header=HEADER), status


@bp.route("/settings/api-keys", methods=["GET", "POST"])
@requires("admin")
def index():
    form = KeyForm()
    if request.method == "POST":
        if check_all(form, lambda: keys.problems(form.label.data or "", form.scope.data or "")):
            try:
                key, token = keys.create_key(form.label.data, form.scope.data, current_user.id)
            except keys.KeyInvalid as exc:
                apply_errors(form, exc.errors)
            else:
                # Shown in this answer only: never flashed (the session cookie would carry it) nor stored.
                response = _page(KeyForm(formdata=None), 201, token=token, created=key)
                return response[0], 201, {"Cache-Control": "no-store"}
        return _page(form, 400)
    return _page(form)


@bp.route("/settings/api-keys/<int:key_id>/revoke", methods=["POST"])
@requires("admin")
def revoke(key_id: int):
    key = db.session.get(ApiKey, key_id) or abort(404)
    require_action_form()
    keys.revoke_key(key, current_user.id)
    flash(f"Revoked the key “{key.label}”: it is refused from now on.", "success")
    return redirect(url_for("api_settings.index"))


@bp.route("/api-docs")
@requires("read")
def docs():
    from api.openapi import ROUTES

    base = current_app.config["BASE_URL"].rstrip("/")
    return render_template("api/docs.html", routes=ROUTES, base=base, header=HEADER,
                           per_page=current_app.config["API_MAX_PER_PAGE"],
                           rate=current_app.config["API_RATE_LIMIT"],
                           body_limit=current_app.config["API_MAX_BODY_BYTES"])

"""Settings → Webhooks: admins register receivers; staff read each one's delivery log and replay deliveries."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectMultipleField, StringField
from wtforms.fields import SelectChoice
from wtforms.widgets import CheckboxInput, ListWidget

from crm.auth.permissions import requires
from crm.extensions import db
from crm.forms import ActionForm, apply_errors, check_all, require_action_form
from crm.models import WEBHOOK_EVENTS, WebhookDelivery, WebhookEndpoint
from outbound import service

bp = Blueprint("webhooks", __name__, url_prefix="/settings/webhooks")


class EndpointForm(FlaskForm):
    url = StringField("Receiver URL (https://...)")
    description = StringField("Description (optional)")
    events = SelectMultipleField("Events", choices=[SelectChoice(e, service.EVENT_LABELS[e]) for e in WEBHOOK_EVENTS],
                                 widget=ListWidget(prefix_label=False), option_widget=CheckboxInput(),
                                 validate_choice=False)
    is_active = BooleanField("On", default=True)

    def data_for_service(self) -> dict:
        return {"url": self.url.data or "", "description": self.description.data or "",
                "events": list(self.events.data or []), "is_active": bool(self.is_active.data)}


class SettingsForm(FlaskForm):
    allow_private_hosts = BooleanField("Allow private, loopback and link-local hosts (for testing only)")


def _index(form: EndpointForm, status: int = 200, secret: str | None = None, created=None):
    settings = SettingsForm(data={"allow_private_hosts": service.allow_private_hosts()})
    return render_template("outbound/index.html", endpoints=service.endpoints(), form=form, settings_form=settings,
                           labels=service.EVENT_LABELS, secret=secret, created=created), status, \
        {"Cache-Control": "no-store"}


def _endpoint_or_404(endpoint_id: int) -> WebhookEndpoint:
    return db.session.get(WebhookEndpoint, endpoint_id) or abort(404)


@bp.route("/", methods=["GET", "POST"])
@requires("admin")
def index():
    form = EndpointForm()
    if request.method == "POST":
        if check_all(form, lambda: service.problems(form.data_for_service())):
            try:
                endpoint, secret = service.create_endpoint(form.data_for_service(), current_user.id)
            except service.Invalid as exc:
                apply_errors(form, exc.errors)
            else:
                # The secret is shown in this answer only (never flashed into the session cookie).
                return _index(EndpointForm(formdata=None), 201, secret=secret, created=endpoint)
        return _index(form, 400)
    return _index(form)


@bp.route("/settings", methods=["POST"])
@requires("admin")
def save_settings():
    form = SettingsForm()
    if not form.validate_on_submit():
        abort(400)
    service.save_settings(form.allow_private_hosts.data, current_user.id)
    flash("Webhook settings saved.", "success")
    return redirect(url_for("webhooks.index"))


@bp.route("/<int:endpoint_id>", methods=["GET", "POST"])
@requires("admin")
def edit(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    form = EndpointForm(obj=endpoint)
    if request.method == "POST" and check_all(form, lambda: service.problems(form.data_for_service())):
        try:
            service.update_endpoint(endpoint, form.data_for_service(), current_user.id)
        except service.Invalid as exc:
            db.session.rollback()
            apply_errors(form, exc.errors)
        else:
            flash("Endpoint saved.", "success")
            return redirect(url_for("webhooks.edit", endpoint_id=endpoint.id))
    return render_template("outbound/endpoint.html", endpoint=endpoint, form=form, action_form=ActionForm(),
                           secret=None), (400 if request.method == "POST" else 200)


@bp.route("/<int:endpoint_id>/rotate", methods=["POST"])
@requires("admin")
def rotate(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    require_action_form()
    secret = service.rotate_secret(endpoint, current_user.id)
    return render_template("outbound/endpoint.html", endpoint=endpoint, form=EndpointForm(obj=endpoint),
                           action_form=ActionForm(), secret=secret), 200, {"Cache-Control": "no-store"}


@bp.route("/<int:endpoint_id>/deliveries")
@requires("read")
def deliveries(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    return render_template("outbound/deliveries.html", endpoint=endpoint, deliveries=service.deliveries(endpoint),
                           action_form=ActionForm(), labels=service.EVENT_LABELS)


@bp.route("/deliveries/<int:delivery_id>")
@requires("read")
def delivery(delivery_id: int):
    row = db.session.get(WebhookDelivery, delivery_id) or abort(404)
    return render_template("outbound/delivery.html", delivery=row, endpoint=_endpoint_or_404(row.endpoint_id),
                           action_form=ActionForm())


@bp.route("/deliveries/<int:delivery_id>/replay", methods=["POST"])
@requires("write")
def replay(delivery_id: int):
    row = db.session.get(WebhookDelivery, delivery_id) or abort(404)
    require_action_form()
    again = service.replay(row, current_user.id)
    flash(f"Queued the event again as delivery {again.id}.", "success")
    return redirect(url_for("webhooks.deliveries", endpoint_id=row.endpoint_id))

"""Settings: the organisation's sending configuration, a test message, and sender identities."""

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField
from wtforms.validators import DataRequired, Email, Length

from crm import audit
from crm.auth.permissions import requires
from crm.extensions import db
from crm.forms import ActionForm, apply_errors, require_action_form
from crm.models import SenderIdentity

bp = Blueprint("settings", __name__, url_prefix="/settings")


class TestMailForm(FlaskForm):
    address = EmailField("Send a test message to", validators=[DataRequired(), Email(), Length(max=320)])


def visible_settings() -> list[tuple[str, str]]:
    """Settings as admins may see them: secrets hidden, passwords stripped from URLs."""
    from campaigns.transport import describe_smtp

    cfg = current_app.config
    return [
        ("ORG_NAME", cfg["ORG_NAME"]),
        ("ORG_POSTAL_ADDRESS", cfg["ORG_POSTAL_ADDRESS"] or "(not set: campaigns cannot be sent)"),
        ("MAIL_FROM", cfg["MAIL_FROM"]),
        ("BASE_URL", cfg["BASE_URL"]),
        ("SEND_RATE_PER_SECOND", str(cfg["SEND_RATE_PER_SECOND"])),
        ("Mail delivery", describe_smtp(current_app)),
        ("Database", db.engine.url.render_as_string(hide_password=True)),
        ("Mode", cfg["CRM_ENV"]),
    ]


@bp.route("/", methods=["GET", "POST"])
@requires("admin")
def index():
    form = TestMailForm()
    if form.validate_on_submit():
        from crm.queues import SEND_TEST_MESSAGE, enqueue

        enqueue(SEND_TEST_MESSAGE, form.address.data)
        audit.record("mail.test", form.address.data)
        db.session.commit()
        flash("Test message queued. A worker will send it within seconds.", "success")
        return redirect(url_for("settings.index"))
    return render_template("settings/index.html", settings=visible_settings(), form=form), (
        400 if form.is_submitted() else 200
    )


# -- sender identities: the From names and addresses campaigns may use ------------------------

@bp.route("/senders", methods=["GET", "POST"])
@requires("admin")
def senders():
    from campaigns import service
    from campaigns.forms import SenderForm

    form = SenderForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            sender = service.save_sender(form.data_for_service(), None, current_user.id)
        except service.Invalid as exc:
            apply_errors(form, exc.errors)
        else:
            flash(f"Added the sender identity {sender.name} <{sender.email}>.", "success")
            return redirect(url_for("settings.senders"))
    return render_template("settings/senders.html", senders=service.sender_identities(), form=form,
                           action_form=ActionForm()), (400 if request.method == "POST" else 200)


@bp.route("/senders/<int:sender_id>", methods=["GET", "POST"])
@requires("admin")
def edit_sender(sender_id: int):
    from campaigns import service
    from campaigns.forms import SenderForm

    sender = db.session.get(SenderIdentity, sender_id) or abort(404)
    form = SenderForm(obj=sender)
    if request.method == "POST" and form.validate_on_submit():
        try:
            service.save_sender(form.data_for_service(), sender, current_user.id)
        except service.Invalid as exc:
            db.session.rollback()
            apply_errors(form, exc.errors)
        else:
            flash(f"Saved {sender.name} <{sender.email}>.", "success")
            return redirect(url_for("settings.senders"))
    return render_template("settings/sender_edit.html", sender=sender, form=form,
                           in_use=service.campaigns_needing(sender)), (400 if request.method == "POST" else 200)


@bp.route("/senders/<int:sender_id>/deactivate", methods=["POST"])
@requires("admin")
def deactivate_sender(sender_id: int):
    from campaigns import service

    sender = db.session.get(SenderIdentity, sender_id) or abort(404)
    require_action_form()
    try:
        service.deactivate_sender(sender, current_user.id)
    except service.Invalid as exc:
        flash("Not deactivated. " + " ".join(exc.errors.get("is_active", [])), "error")
    else:
        flash(f"Deactivated {sender.email}; the campaign editor no longer offers it.", "success")
    return redirect(url_for("settings.senders"))

"""Settings: the organisation (name, postal address, default sender, country), mail delivery, sender identities."""

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length

from crm import audit
from crm.auth.permissions import requires
from crm.countries import countries
from crm.extensions import db
from crm.forms import ActionForm, apply_errors, check_all, require_action_form
from crm.models import SenderIdentity
from crm.settings import org

bp = Blueprint("settings", __name__, url_prefix="/settings")


class TestMailForm(FlaskForm):
    address = EmailField("Send a test message to", validators=[DataRequired(), Email(), Length(max=320)])


class OrgForm(FlaskForm):
    """The organisation's own settings; the rules are crm.settings.org.clean's."""

    name = StringField("Organisation name")
    postal_address = TextAreaField("Postal address (printed in every message's footer)", render_kw={"rows": 3})
    mail_from = StringField("Default sender address", render_kw={"type": "email", "autocomplete": "off"})
    country = SelectField("Country (the public sign form starts on it)", validate_choice=False)

    def data_for_service(self) -> dict:
        return {name: getattr(self, name).data for name in ("name", "postal_address", "mail_from", "country")}


def org_form(formdata=None) -> OrgForm:
    current = org.current()
    form = OrgForm(formdata=formdata, data={"name": current.name, "postal_address": current.postal_address,
                                            "mail_from": current.mail_from, "country": current.country})
    form.country.choices = [("", "Not set")] + list(countries())
    return form


def visible_settings() -> list[tuple[str, str]]:
    """Settings as admins may see them: secrets hidden, passwords stripped from URLs."""
    from campaigns.transport import describe_smtp

    cfg = current_app.config
    return [
        ("BASE_URL", cfg["BASE_URL"]),
        ("SEND_RATE_PER_SECOND", str(cfg["SEND_RATE_PER_SECOND"])),
        ("Mail delivery", describe_smtp(current_app)),
        ("Database", db.engine.url.render_as_string(hide_password=True)),
        ("Mode", cfg["CRM_ENV"]),
    ]


def _index(form: TestMailForm, organisation: OrgForm, status: int = 200):
    return render_template("settings/index.html", settings=visible_settings(), form=form, org_form=organisation,
                           env=org.defaults()), status


@bp.route("/", methods=["GET", "POST"])
@requires("admin")
def index():
    """GET: the settings. POST: the mail delivery check (the organisation form posts to /settings/org)."""
    form = TestMailForm()
    if form.validate_on_submit():
        from crm.queues import SEND_TEST_MESSAGE, enqueue

        enqueue(SEND_TEST_MESSAGE, form.address.data)
        audit.record("mail.test", form.address.data)
        db.session.commit()
        flash("Test message queued. A worker will send it within seconds.", "success")
        return redirect(url_for("settings.index"))
    return _index(form, org_form(), 400 if form.is_submitted() else 200)


@bp.route("/org", methods=["POST"])
@requires("admin")
def save_org():
    """Save the organisation's name, postal address, default sender and country (audit-logged)."""
    form = org_form(request.form)
    if check_all(form, lambda: org.problems(form.data_for_service())):
        try:
            org.save(form.data_for_service(), current_user.id)
        except org.SettingsInvalid as exc:
            db.session.rollback()
            apply_errors(form, exc.errors)
        else:
            flash("Organisation settings saved. They apply to new pages and messages at once.", "success")
            return redirect(url_for("settings.index") + "#organisation")
    return _index(TestMailForm(formdata=None), form, 400)


# -- sender identities: the From names and addresses campaigns may use ------------------------

@bp.route("/senders", methods=["GET", "POST"])
@requires("admin")
def senders():
    from campaigns import service
    from campaigns.forms import SenderForm

    form = SenderForm()
    if request.method == "POST" and check_all(form, lambda: service.sender_problems(form.data_for_service())):
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
    if request.method == "POST" and check_all(form, lambda: service.sender_problems(form.data_for_service(), sender)):
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

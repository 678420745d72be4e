"""Settings: the organisation's sending configuration and a test message."""

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import EmailField
from wtforms.validators import DataRequired, Email, Length

from crm import audit
from crm.auth.permissions import requires
from crm.extensions import db

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
        from workers import enqueue
        from workers.jobs import send_test_message

        enqueue(send_test_message, form.address.data)
        audit.record("mail.test", form.address.data)
        db.session.commit()
        flash("Test message queued. A worker will send it within seconds.", "success")
        return redirect(url_for("settings.index"))
    return render_template("settings/index.html", settings=visible_settings(), form=form), (
        400 if form.is_submitted() else 200
    )

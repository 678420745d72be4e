"""Staff pages: the suppression list (/suppression) and list health (/list-health); the banner
on the campaign pages and the dashboard line read feedback/health.py too."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import EmailField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from crm.auth.permissions import requires
from crm.extensions import db
from crm.input_guard import accepts_files, positive_int
from crm.models import SUPPRESSION_REASONS, StaffUser, Suppression
from crm.supporters import suppression
from feedback import health, intake

bp = Blueprint("deliverability", __name__)

UPLOAD_MAX_BYTES = 10 * 1024 * 1024
EMAIL_HEADERS = {"email", "e-mail", "email address", "e-mail address", "email_address", "address", "mail"}


class AddForm(FlaskForm):
    address = EmailField("Address", validators=[DataRequired(), Length(max=320)])
    note = StringField("Why (optional)", validators=[Length(max=500)])


class UploadForm(FlaskForm):
    file = FileField("CSV of addresses (one a line, or a column headed “email”)", validators=[FileRequired()])
    note = StringField("Why (optional)", validators=[Length(max=500)])


class RemoveForm(FlaskForm):
    reason = TextAreaField("Reason for removing it", validators=[DataRequired(), Length(max=2000)])


@bp.app_template_global()
def complaint_warning():
    """The latest campaign's health when its complaint rate passed 0.1% (campaign pages' banner)."""
    return health.last_campaign_warning()


def _page(add_form=None, upload_form=None, status=200, upload_result=None):
    q = request.args.get("q", "")
    reason = request.args.get("reason", "")
    reason = reason if reason in SUPPRESSION_REASONS else ""
    after = positive_int(request.args.get("after"))
    entries = suppression.listing(q, reason, after, limit=suppression.PAGE_SIZE + 1)
    more = len(entries) > suppression.PAGE_SIZE
    entries = entries[:suppression.PAGE_SIZE]
    staff = {s.id: s for s in db.session.scalars(db.select(StaffUser).where(
        StaffUser.id.in_({e.added_by_id for e in entries if e.added_by_id})))}
    return render_template(
        "feedback/suppression.html", entries=entries, more=more, q=q, reason=reason, reasons=SUPPRESSION_REASONS,
        counts=suppression.counts_by_reason(), staff=staff, add_form=add_form or AddForm(formdata=None),
        upload_form=upload_form or UploadForm(formdata=None), remove_form=RemoveForm(formdata=None),
        removable=suppression.REMOVABLE, upload_result=upload_result), status


@bp.route("/suppression")
@requires("read")
def suppression_list():
    return _page()


@bp.route("/suppression/add", methods=["POST"])
@requires("write")
def add():
    form = AddForm()
    if not form.validate_on_submit():
        return _page(add_form=form, status=400)
    try:
        suppression.add_by_staff(form.address.data, current_user.id, form.note.data)
    except suppression.SuppressionError as exc:
        form.address.errors = [str(exc)]
        return _page(add_form=form, status=400)
    flash("Added to the suppression list: it will not be mailed again.", "success")
    return redirect(url_for("deliverability.suppression_list"))


def read_addresses(data: bytes) -> list[tuple[int, str]]:
    """(line, address) pairs from an uploaded CSV: the column headed email, else the first."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", "replace")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    column = next((i for i, name in enumerate(header) if name in EMAIL_HEADERS), None)
    start = 1 if column is not None or (header and "@" not in header[0]) else 0
    column = column or 0
    return [(n + 1, row[column].strip()) for n, row in enumerate(rows) if n >= start and len(row) > column]


@bp.route("/suppression/upload", methods=["POST"])
@requires("write")
@accepts_files("file")
def upload():
    form = UploadForm()
    if not form.validate_on_submit():
        return _page(upload_form=form, status=400)
    data = form.file.data.read(UPLOAD_MAX_BYTES + 1)
    if len(data) > UPLOAD_MAX_BYTES:
        form.file.errors = ["The file is larger than 10 MB; split it."]
        return _page(upload_form=form, status=400)
    addresses = read_addresses(data)
    if len(addresses) > suppression.UPLOAD_MAX_ROWS:
        form.file.errors = [f"At most {suppression.UPLOAD_MAX_ROWS:,} addresses per file."]
        return _page(upload_form=form, status=400)
    if not addresses:
        form.file.errors = ["No addresses found in the file."]
        return _page(upload_form=form, status=400)
    result = suppression.add_many_by_staff(addresses, current_user.id, form.note.data)
    flash(f"Added {result.added:,} addresses; {result.already:,} were on the list already"
          + (f"; {len(result.invalid):,} rows were not addresses (listed below)." if result.invalid else "."),
          "success" if not result.invalid else "warning")
    if result.invalid:
        return _page(upload_result=result)
    return redirect(url_for("deliverability.suppression_list"))


@bp.route("/suppression/<int:entry_id>/remove", methods=["GET", "POST"])
@requires("write")
def remove(entry_id: int):
    entry = db.session.get(Suppression, entry_id) or abort(404)
    form = RemoveForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            suppression.remove_by_staff(entry_id, current_user.id, form.reason.data)
        except suppression.SuppressionError as exc:
            form.reason.errors = [str(exc)]
        else:
            flash("Removed from the suppression list. The supporter's email status is unchanged.", "success")
            return redirect(url_for("deliverability.suppression_list"))
    return render_template("feedback/remove.html", entry=entry, form=form,
                           removable=entry.reason in suppression.REMOVABLE), (400 if request.method == "POST" else 200)


@bp.route("/list-health")
@requires("read")
def list_health():
    campaigns = health.campaigns_health(health.recent_campaigns())
    waiting, failed = intake.backlog()
    return render_template("feedback/health.html", campaigns=campaigns, chart=health.chart(campaigns),
                           window=health.window(), suppressed=health.suppressed_this_month(),
                           warn=health.WARN_RATE, limit=health.LIMIT_RATE, days=health.WINDOW_DAYS,
                           intake_waiting=waiting, intake_failed=failed)


@bp.app_template_filter("percent")
def percent(rate: float, digits: int = 2) -> str:
    """0.0015 -> '0.15%'."""
    return f"{rate * 100:.{digits}f}%"


@bp.app_template_global()
def campaign_health(campaign):
    """One campaign's bounce, complaint and unsubscribe counts (campaign page)."""
    return health.campaigns_health([campaign])[0] if campaign is not None and campaign.started_at else None

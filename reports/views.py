"""Report pages and exports under /reports: thin views over reports.service and reports.exports."""

from __future__ import annotations

import os
from tempfile import SpooledTemporaryFile

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select
from wtforms.fields import SelectChoice

from crm import exports as writers
from crm.auth.permissions import can, requires
from crm.extensions import db
from crm.forms import ActionForm
from crm.models import Campaign, ExportJob, Petition, Segment
from reports import exports, service
from reports.forms import ExportForm

bp = Blueprint("reports", __name__, url_prefix="/reports")


@bp.route("/")
@requires("read")
def index():
    return render_template("reports/index.html", d=service.dashboard())


@bp.route("/petitions")
@requires("read")
def petitions():
    return render_template("reports/petitions.html", petitions=service.petitions_overview(),
                           consent=service.consent_sources(), freshness=service.freshness())


@bp.route("/campaigns/<int:campaign_id>")
@requires("read")
def campaign(campaign_id: int):
    found = db.session.get(Campaign, campaign_id) or abort(404)
    return render_template("reports/campaign.html", r=service.campaign_report(found), action_form=ActionForm())


@bp.route("/petitions/<int:petition_id>")
@requires("read")
def petition(petition_id: int):
    found = db.session.get(Petition, petition_id) or abort(404)
    return render_template("reports/petition.html", r=service.petition_report(found))


# -- exports -------------------------------------------------------------------------------------

def _export_form() -> ExportForm:
    form = ExportForm()
    form.campaigns.choices = [SelectChoice(c.id, c.name) for c in db.session.scalars(
        select(Campaign).where(Campaign.started_at.is_not(None)).order_by(Campaign.started_at.desc()).limit(200))]
    form.segment.choices = [SelectChoice("", "Everyone")] + [
        SelectChoice(str(s.id), s.name) for s in db.session.scalars(select(Segment).order_by(Segment.name))]
    return form


def _exports_page(form: ExportForm, status: int = 200):
    return render_template("reports/exports.html", form=form, jobs=exports.jobs_for(current_user.id),
                           limit=current_app.config["EXPORT_STREAM_MAX_ROWS"]), status


@bp.route("/exports", methods=["GET", "POST"])
@requires("export")
def exports_page():
    form = _export_form()
    if request.method == "GET" or not form.validate_on_submit():
        return _exports_page(form, 200 if request.method == "GET" else 400)
    filters = exports.Filters(since=form.since.data, until=form.until.data,
                              campaign_ids=list(form.campaigns.data or []),
                              segment_id=int(form.segment.data) if form.segment.data else None)
    try:
        exports.check(filters)
    except exports.ExportProblem as exc:
        form.form_errors.append(str(exc))
        return _exports_page(form, 400)
    kind, fmt = form.kind.data, form.format.data
    # An address goes out only to staff who may export and who asked for it.
    include_email = bool(form.include_email.data) and can("export")
    rows = exports.count_rows(kind, filters)
    if fmt == "xlsx" and rows > exports.XLSX_MAX_ROWS:
        form.form_errors.append(f"{rows:,} rows do not fit in one Excel worksheet: choose CSV or Parquet, "
                                "or narrow the filters.")
        return _exports_page(form, 400)
    if rows > current_app.config["EXPORT_STREAM_MAX_ROWS"]:
        job = exports.create_job(kind, fmt, filters, include_email, current_user.id, rows)
        flash(f"The export of {rows:,} rows is being built; this page shows its progress.", "success")
        return redirect(url_for("reports.export_job", export_id=job.id))
    exports.record(kind, fmt, filters, include_email, rows)
    headers = {"Content-Disposition": f'attachment; filename="{exports.filename(kind, fmt)}"',
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if fmt == "csv":
        return Response(stream_with_context(exports.stream_csv(kind, filters, include_email)),
                        mimetype="text/csv", headers=headers)
    # XLSX and Parquet end with an index of what came before, so the file is written whole
    # (to a spooled temporary file: memory up to 16 MB, then disk) and then streamed.
    spool = SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    exports.write_file(kind, fmt, filters, include_email, spool)
    spool.seek(0)
    return Response(writers.iter_file(spool), mimetype=exports.MIMETYPES[fmt], headers=headers)


def _own_job_or_404(export_id: int) -> ExportJob:
    job = db.session.get(ExportJob, export_id)
    if job is None or job.requested_by_id != current_user.id:
        abort(404)  # another person's export is not even acknowledged
    return job


@bp.route("/exports/<int:export_id>")
@requires("export")
def export_job(export_id: int):
    return render_template("reports/export_job.html", job=_own_job_or_404(export_id))


@bp.route("/exports/<int:export_id>/download")
@requires("export")
def export_download(export_id: int):
    job = _own_job_or_404(export_id)
    if job.status != "done" or not job.stored_path or not os.path.exists(job.stored_path):
        abort(404)
    exports.record(job.kind, job.format, exports.Filters.from_json(job.filters),
                   bool(job.filters.get("include_email")), job.rows_done, job_id=job.id)
    return send_file(job.stored_path, mimetype=exports.MIMETYPES[job.format], as_attachment=True,
                     download_name=exports.filename(job.kind, job.format), max_age=0)

from pathlib import Path

from flask import abort, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from wtforms.fields import SelectChoice

from crm.auth.permissions import requires
from crm.extensions import db
from crm.imports import bp, service
from crm.imports.engine import file_info
from crm.imports.forms import OptionsForm, UploadForm
from crm.imports.rows import FIELDS
from crm.input_guard import accepts_files, positive_int
from crm.models import ImportJob, Petition


def _job(import_id: int) -> ImportJob:
    return db.session.get(ImportJob, import_id) or abort(404)


@bp.route("/")
@requires("read")
def index():
    jobs = db.session.scalars(db.select(ImportJob).order_by(ImportJob.id.desc()).limit(200))
    return render_template("imports/index.html", jobs=list(jobs))


@bp.route("/new", methods=["GET", "POST"])
@requires("write")
@accepts_files("file")
def new():
    form = UploadForm()
    if form.validate_on_submit():
        upload = form.file.data
        try:
            job = service.create_import(upload, upload.filename or "", current_user.id)
        except service.UnreadableFile as exc:
            form.file.errors.append(str(exc))
        else:
            return redirect(url_for("imports.mapping", import_id=job.id))
    status = 400 if form.is_submitted() else 200
    return render_template("imports/new.html", form=form), status


def _options_form(job: ImportJob) -> OptionsForm:
    options = job.options
    form = OptionsForm(data=None if request.method == "POST" else {
        "petition_id": str(options.get("petition_id") or ""),
        "petition_wording": options.get("petition_wording", False),
        "tags": options.get("tags", ""), "consent": options.get("consent", "column")})
    petitions = db.session.execute(db.select(Petition.id, Petition.title).order_by(Petition.title)).all()
    form.petition_id.choices = [SelectChoice("", "— none —")] + [SelectChoice(str(p.id), p.title) for p in petitions]
    return form


@bp.route("/<int:import_id>/map", methods=["GET", "POST"])
@requires("write")
def mapping(import_id: int):
    job = _job(import_id)
    if job.status != "uploaded":
        return redirect(url_for("imports.show", import_id=job.id))
    header = file_info(job).header
    form = _options_form(job)
    mapping = dict(job.mapping)
    error = None
    status = 200
    if request.method == "POST":
        mapping = {c: request.form.get(f"map-{i}", "ignore") for i, c in enumerate(header)}
        if form.validate():
            petition_id = positive_int(form.petition_id.data)
            try:
                service.configure(job, mapping, petition_id=petition_id,
                                  petition_wording=form.petition_wording.data,
                                  tags=form.tags.data or "", consent=form.consent.data)
            except service.ImportSetupError as exc:
                db.session.rollback()
                error = str(exc)
            else:
                if request.form.get("action") == "confirm":
                    service.queue_import(job)
                    flash(f"Import of {job.filename} queued.", "success")
                    return redirect(url_for("imports.show", import_id=job.id))
                db.session.commit()
        if error or form.errors:
            status = 400
    rows = []
    if not error:
        try:
            rows = service.preview(job)
        except (service.UnreadableFile, OSError) as exc:  # e.g. the stored file was removed
            error, status = f"The file can no longer be read: {exc}", 400
    return render_template("imports/map.html", job=job, header=header, mapping=mapping, fields=FIELDS,
                           form=form, rows=rows, error=error, consent=service.consent_plan(job)), status


@bp.route("/<int:import_id>")
@requires("read")
def show(import_id: int):
    job = _job(import_id)
    return render_template("imports/show.html", job=job)


@bp.route("/<int:import_id>/rejected.csv")
@requires("export")
def rejected(import_id: int):
    job = _job(import_id)
    if not job.rejected_path or not Path(job.rejected_path).exists():
        abort(404)
    from crm import audit

    audit.record("import.rejected_download", f"import:{job.id}", rows=job.rejected_count)
    db.session.commit()
    return send_file(job.rejected_path, mimetype="text/csv", as_attachment=True,
                     download_name=f"import-{job.id}-rejected.csv")

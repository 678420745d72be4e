"""Segment pages: thin views over crm.segments.service."""

from __future__ import annotations

import json

from flask import (
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user

from crm import exports
from crm.auth.permissions import requires
from crm.countries import countries
from crm.extensions import db
from crm.filters import count_of, plural
from crm.forms import ActionForm, apply_errors, check_all, require_action_form
from crm.models import EMAIL_STATUSES, Segment, utcnow
from crm.segments import bp, compiler, service
from crm.segments.forms import SegmentForm
from crm.segments.rules import EMPTY_TREE, RuleError
from crm.segments.summary import summarise


def _segment_or_404(segment_id: int) -> Segment:
    return db.session.get(Segment, segment_id) or abort(404)


@bp.route("/")
@requires("read")
def index():
    return render_template("segments/index.html", rows=service.list_segments())


@bp.route("/<int:segment_id>")
@requires("read")
def show(segment_id: int):
    segment = _segment_or_404(segment_id)
    validated, error = service.describe(segment)
    preview = None
    if validated is not None:
        preview = service.Preview(compiler.count(validated), compiler.sample(validated),
                                  summarise(validated))
    return render_template("segments/show.html", segment=segment, preview=preview, error=error,
                           form=ActionForm())


@bp.route("/new", methods=["GET", "POST"])
@requires("write")
def new():
    form = SegmentForm()
    if request.method == "GET":
        form.rules.data = json.dumps(EMPTY_TREE)
    return _save(form, None)


@bp.route("/<int:segment_id>/edit", methods=["GET", "POST"])
@requires("write")
def edit(segment_id: int):
    segment = _segment_or_404(segment_id)
    form = SegmentForm(obj=segment)
    if request.method == "GET":
        form.rules.data = json.dumps(segment.rules)
    return _save(form, segment)


def _save(form: SegmentForm, segment: Segment | None):
    if request.method == "POST":
        data = {"name": form.name.data, "description": form.description.data, "rules": form.rules.data}
        if check_all(form, lambda: service.problems(data, segment)):
            try:
                saved = service.save_segment(data, segment, current_user.id)
            except service.SegmentInvalid as exc:
                apply_errors(form, exc.errors)
            else:
                flash("Segment saved.", "success")
                return redirect(url_for("segments.show", segment_id=saved.id))
    status = 400 if request.method == "POST" else 200
    return render_template(
        "segments/edit.html", form=form, segment=segment, statuses=EMAIL_STATUSES, countries=countries(),
        builder=service.builder_data(segment.id if segment else None),
    ), status


@bp.route("/preview", methods=["POST"])
@requires("read")
def preview():
    """JSON in ({"rules": tree, "segment_id": optional}), JSON out: count, sample, summary."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "rules" not in body:
        return jsonify(error='Send {"rules": ...} as JSON.', path=""), 400
    segment_id = body.get("segment_id")
    if not (isinstance(segment_id, int) and not isinstance(segment_id, bool)):
        segment_id = None
    try:
        result = service.preview(body["rules"], segment_id=segment_id)
    except RuleError as exc:
        return jsonify(error=str(exc), path=exc.path), 400
    return jsonify(result.as_json())


@bp.route("/<int:segment_id>/duplicate", methods=["POST"])
@requires("write")
def duplicate(segment_id: int):
    segment = _segment_or_404(segment_id)
    require_action_form()
    copy = service.duplicate_segment(segment, current_user.id)
    flash(f"Copied as “{copy.name}”.", "success")
    return redirect(url_for("segments.edit", segment_id=copy.id))


@bp.route("/<int:segment_id>/delete", methods=["POST"])
@requires("write")
def delete(segment_id: int):
    segment = _segment_or_404(segment_id)
    require_action_form()
    name = segment.name
    try:
        drafts = service.delete_segment(segment)
    except service.SegmentInvalid as exc:
        flash(f"Not deleted. {exc}", "error")
        return redirect(url_for("segments.show", segment_id=segment_id))
    note = ""
    if drafts:
        note = (f" {count_of(drafts, 'draft campaign', 'draft campaigns')} no longer "
                f"{plural(drafts, 'has', 'have')} a segment; choose another before sending.")
    flash(f"Deleted “{name}”.{note}", "success")
    return redirect(url_for("segments.index"))


@bp.route("/<int:segment_id>/export")
@requires("export")
def export(segment_id: int):
    segment = _segment_or_404(segment_id)
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "xlsx"):
        abort(400)
    validated, error = service.describe(segment)
    if validated is None:
        flash(f"This segment cannot be exported until its rules are fixed: {error}", "error")
        return redirect(url_for("segments.show", segment_id=segment.id))
    service.record_export(segment, fmt, compiler.count(validated))
    filename = f"segment-{segment.id}-{utcnow():%Y-%m-%d}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"',
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if fmt == "csv":
        body = exports.stream_csv(service.EXPORT_HEADER, service.export_rows(validated))
        return Response(stream_with_context(body), mimetype="text/csv", headers=headers)
    spool = exports.xlsx_file(service.EXPORT_HEADER, service.export_rows(validated),
                              title="Segment")
    return Response(exports.iter_file(spool), headers=headers,
                    mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


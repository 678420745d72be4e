import json

from flask import (
    Response,
    abort,
    current_app,
    flash,
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
from crm.filters import count_of
from crm.forms import apply_errors, check_all
from crm.models import EMAIL_STATUSES, utcnow
from crm.supporters import bp, service
from crm.supporters.forms import (
    BulkTagForm,
    ConsentChangeForm,
    EraseForm,
    NotesForm,
    SupporterEditForm,
    TagForm,
)


@bp.route("/")
@requires("read")
def index():
    flt = service.SupporterFilter.from_args(request.args)
    sort = request.args.get("sort", service.DEFAULT_SORT)
    if sort not in service.SORTS:
        sort = service.DEFAULT_SORT
    try:
        supporters, next_after = service.page_of_supporters(flt, sort, request.args.get("after"))
    except service.BadCursor:
        abort(400)
    bulk_form = BulkTagForm()
    return render_template(
        "supporters/index.html", supporters=supporters, next_after=next_after, flt=flt,
        sort=sort, sorts=service.SORT_LABELS, total=service.count_supporters(flt),
        statuses=EMAIL_STATUSES, petitions=service.petition_choices(), tags=service.tag_choices(),
        segments=service.segment_choices(), segment_problem=service.segment_problem(flt),
        bulk_form=bulk_form, paged=bool(request.args.get("after")),
    )


@bp.route("/bulk-tag", methods=["POST"])
@requires("write")
def bulk_tag():
    flt = service.SupporterFilter.from_args(request.form)
    form = BulkTagForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(error, "error")
        return redirect(url_for("supporters.index", **flt.as_args()))
    problem = service.segment_problem(flt)
    if problem:
        flash(f"Nothing tagged. {problem}", "error")
        return redirect(url_for("supporters.index", **flt.as_args()))
    try:
        tag, changed = service.bulk_tag(flt, form.tag.data, form.action.data)
    except service.SupporterError as exc:
        flash(str(exc), "error")
    else:
        verb = "Tagged" if form.action.data == "add" else "Removed the tag from"
        flash(f"{verb} {count_of(changed, 'supporter', 'supporters')} “{tag.name}”.", "success")
    return redirect(url_for("supporters.index", **flt.as_args()))


@bp.route("/export")
@requires("export")
def export():
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "xlsx"):
        abort(400)
    flt = service.SupporterFilter.from_args(request.args)
    problem = service.segment_problem(flt)
    if problem:
        flash(f"Nothing exported. {problem}", "error")
        return redirect(url_for("supporters.index", **flt.as_args()))
    rows = service.count_supporters(flt)
    service.record_export(flt, fmt, rows)
    filename = f"supporters-{utcnow():%Y-%m-%d}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"',
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if fmt == "csv":
        body = exports.stream_csv(service.EXPORT_HEADER, service.export_rows(flt))
        return Response(stream_with_context(body), mimetype="text/csv", headers=headers)
    spool = exports.xlsx_file(service.EXPORT_HEADER, service.export_rows(flt), title="Supporters")
    return Response(
        exports.iter_file(spool), headers=headers,
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )


def _supporter_or_404(supporter_id: int):
    supporter = service.get_supporter(supporter_id)
    if supporter is None:
        abort(404)
    return supporter


def _campaign_url():
    """A function campaign id -> URL of its page, or None while the campaigns blueprint has no
    `campaigns.show` (the profile then names campaigns without links)."""
    if "campaigns.show" not in current_app.view_functions:
        return None
    # Ask the rule for its one argument's name rather than assuming it.
    rule = next(iter(current_app.url_map.iter_rules("campaigns.show")))
    if len(rule.arguments) != 1:
        return None
    (argument,) = rule.arguments
    return lambda campaign_id: url_for("campaigns.show", **{argument: campaign_id})


def _render_profile(supporter, status=200, **forms):
    forms.setdefault("tag_form", TagForm(formdata=None))
    forms.setdefault("notes_form", NotesForm(formdata=None, obj=supporter))
    forms.setdefault("consent_form", ConsentChangeForm(formdata=None))
    timeline = service.consent_timeline(supporter)
    return render_template(
        "supporters/show.html", supporter=supporter, timeline=timeline,
        campaign_names=service.campaign_names(timeline), signed=service.petitions_signed(supporter),
        messages=service.messages_received(supporter, service.MESSAGES_SHOWN), messages_shown=service.MESSAGES_SHOWN,
        campaign_url=_campaign_url(), **forms,
    ), status


@bp.route("/<int:supporter_id>")
@requires("read")
def show(supporter_id: int):
    return _render_profile(_supporter_or_404(supporter_id))


@bp.route("/<int:supporter_id>/edit", methods=["GET", "POST"])
@requires("write")
def edit(supporter_id: int):
    supporter = _supporter_or_404(supporter_id)
    form = SupporterEditForm(obj=supporter)
    form.country.choices = [("", "Not known")] + list(countries())
    status = 200
    if request.method == "POST":
        fields = {name: getattr(form, name).data for name in ("email", "first_name", "last_name", "postal_code",
                                                              "country")}
        if check_all(form, lambda: service.profile_problems(supporter, **fields)):
            try:
                service.update_supporter(supporter, **fields)
            except service.ProfileInvalid as exc:
                apply_errors(form, exc.errors)
            else:
                flash("Saved.", "success")
                return redirect(url_for("supporters.show", supporter_id=supporter.id))
        status = 400
    return render_template("supporters/edit.html", supporter=supporter, form=form), status


@bp.route("/<int:supporter_id>/notes", methods=["POST"])
@requires("write")
def notes(supporter_id: int):
    supporter = _supporter_or_404(supporter_id)
    form = NotesForm()
    if not form.validate_on_submit():
        return _render_profile(supporter, 400, notes_form=form)
    service.save_notes(supporter, form.notes.data)
    flash("Notes saved.", "success")
    return redirect(url_for("supporters.show", supporter_id=supporter.id))


@bp.route("/<int:supporter_id>/tags", methods=["POST"])
@requires("write")
def add_tag(supporter_id: int):
    supporter = _supporter_or_404(supporter_id)
    form = TagForm()
    if not form.validate_on_submit():
        return _render_profile(supporter, 400, tag_form=form)
    try:
        tag = service.add_tag(supporter, form.name.data)
    except service.SupporterError as exc:
        form.name.errors = [str(exc)]
        return _render_profile(supporter, 400, tag_form=form)
    flash(f"Tagged “{tag.name}”.", "success")
    return redirect(url_for("supporters.show", supporter_id=supporter.id))


@bp.route("/<int:supporter_id>/tags/<int:tag_id>/remove", methods=["POST"])
@requires("write")
def remove_tag(supporter_id: int, tag_id: int):
    supporter = _supporter_or_404(supporter_id)
    service.remove_tag(supporter, tag_id)
    flash("Tag removed.", "success")
    return redirect(url_for("supporters.show", supporter_id=supporter.id))


def _consent_change(supporter_id: int, change, done: str):
    supporter = _supporter_or_404(supporter_id)
    form = ConsentChangeForm()
    if not form.validate_on_submit():
        return _render_profile(supporter, 400, consent_form=form)
    try:
        change(supporter, current_user.id, form.reason.data)
    except service.SupporterError as exc:
        form.reason.errors = [str(exc)]
        return _render_profile(supporter, 400, consent_form=form)
    flash(done, "success")
    return redirect(url_for("supporters.show", supporter_id=supporter.id))


@bp.route("/<int:supporter_id>/unsubscribe", methods=["POST"])
@requires("write")
def unsubscribe(supporter_id: int):
    return _consent_change(supporter_id, service.staff_unsubscribe,
                           "Unsubscribed. They will receive no more campaign email.")


@bp.route("/<int:supporter_id>/resubscribe", methods=["POST"])
@requires("write")
def resubscribe(supporter_id: int):
    return _consent_change(supporter_id, service.staff_resubscribe, "Resubscribed.")


@bp.route("/<int:supporter_id>/data.json")
@requires("export")
def data_export(supporter_id: int):
    supporter = _supporter_or_404(supporter_id)
    data = service.subject_access_export(supporter)
    return Response(
        json.dumps(data, ensure_ascii=False, indent=2), mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="supporter-{supporter.id}.json"',
                 "Cache-Control": "no-store"},
    )


@bp.route("/<int:supporter_id>/erase", methods=["GET", "POST"])
@requires("admin")
def erase(supporter_id: int):
    supporter = _supporter_or_404(supporter_id)
    form = EraseForm()
    status = 200
    if form.validate_on_submit():
        if form.confirm.data.strip() == "ERASE":
            service.erase_supporter(supporter, current_user.id)
            flash(f"Supporter #{supporter_id} was erased; the address is on the suppression list.",
                  "success")
            return redirect(url_for("supporters.index"))
        form.confirm.errors = ["Type ERASE in capitals to confirm."]
        status = 400
    elif form.is_submitted():
        status = 400
    return render_template("supporters/erase.html", supporter=supporter, form=form), status

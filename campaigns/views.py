"""Staff pages for campaigns: list, editor, preview, test send, schedule, send, progress.

Thin views over campaigns.service (drafts, templates) and campaigns.lifecycle (transitions).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from markupsafe import escape

from campaigns import lifecycle, service
from campaigns.forms import CampaignForm, NewCampaignForm, ScheduleForm, TemplateForm, TestSendForm
from campaigns.lifecycle import LifecycleError
from campaigns.pipeline import readiness_problem
from crm.auth.permissions import can, requires
from crm.clock import local_time, org_zone, to_local
from crm.extensions import db
from crm.forms import ActionForm, apply_errors, require_action_form
from crm.input_guard import positive_int
from crm.models import Campaign, EmailTemplate
from crm.segments.rules import RuleError
from crm.settings import org

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns")

# The rendered email is shown in a sandboxed iframe; it may show styles and images, nothing else.
PREVIEW_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; font-src https: data:; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox")
LIVE_STATUSES = ("scheduled", "sending", "paused")


@bp.app_template_global("campaign_status")
def campaign_status(campaign: Campaign) -> str:
    return service.shown_status(campaign)


@bp.app_template_global("campaign_subject")
def campaign_subject(campaign: Campaign) -> str:
    return service.sample_subject(campaign)


def _campaign_or_404(campaign_id: int) -> Campaign:
    return db.session.get(Campaign, campaign_id) or abort(404)


def _template_or_404(template_id: int) -> EmailTemplate:
    return db.session.get(EmailTemplate, template_id) or abort(404)


# -- list -----------------------------------------------------------------------------------

@bp.route("/")
@requires("read")
def index():
    picker = NewCampaignForm()
    library = service.templates()
    picker.template_id.choices = [("", "Blank")] + [(str(t.id), t.name) for t in library]
    default = next((t for t in library if t.name == service.DEFAULT_TEMPLATE_NAME), None)
    picker.template_id.data = str(default.id) if default else ""
    return render_template("campaigns/index.html", rows=service.list_campaigns(), picker=picker)


# -- editor ---------------------------------------------------------------------------------

def _editor_choices(form: CampaignForm, campaign: Campaign | None) -> None:
    senders = service.active_senders()
    choices = [("", "Choose a sender identity")] + [(s.id, f"{s.name} <{s.email}>") for s in senders]
    if campaign is not None and campaign.sender is not None and not campaign.sender.is_active:
        choices.append((campaign.sender.id, f"{campaign.sender.name} <{campaign.sender.email}> (deactivated)"))
    form.sender_id.choices = choices
    form.segment_id.choices = [("", "Choose a segment")] + [(s.id, s.name) for s in service.segments()]


@bp.route("/new", methods=["GET", "POST"])
@requires("write")
def new():
    form = CampaignForm()
    _editor_choices(form, None)
    if request.method == "GET":
        template_id = request.args.get("template_id", type=positive_int)
        template = db.session.get(EmailTemplate, template_id) if template_id else None
        form.mjml.data = template.mjml if template else service.BLANK_MJML
        senders = service.active_senders()
        form.sender_id.data = senders[0].id if len(senders) == 1 else None
        return _editor(form, None)
    if form.validate_on_submit():
        try:
            campaign = service.create_campaign(form.data_for_service(), current_user.id)
        except service.Invalid as exc:
            apply_errors(form, exc.errors)
        else:
            flash("Campaign saved as a draft.", "success")
            return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    return _editor(form, None, 400)


@bp.route("/<int:campaign_id>/edit", methods=["GET", "POST"])
@requires("write")
def edit(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    form = CampaignForm(obj=campaign)
    _editor_choices(form, campaign)
    if request.method == "GET":
        form.version.data = str(campaign.version)
        return _editor(form, campaign)
    if not campaign.is_editable:
        form.form_errors.append("Editing is locked once sending starts.")
        return _editor(form, campaign, 409)
    if form.validate_on_submit():
        try:
            service.update_campaign(campaign, form.data_for_service(), current_user.id,
                                    expected_version=request.form.get("version", type=positive_int))
        except service.Invalid as exc:
            apply_errors(form, exc.errors)
        except LifecycleError as exc:
            form.form_errors.append(str(exc))
            return _editor(form, campaign, 409)
        else:
            note = " The schedule stands; the new content goes out then." if campaign.status == "scheduled" else ""
            flash(f"Campaign saved.{note}", "success")
            return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    return _editor(form, campaign, 400)


def _editor(form: CampaignForm, campaign: Campaign | None, status: int = 200):
    locked = campaign is not None and not campaign.is_editable
    return render_template("campaigns/edit.html", form=form, campaign=campaign, locked=locked,
                           has_senders=bool(service.active_senders())), status


@bp.route("/preview", methods=["POST"])
@requires("read")
def preview():
    """JSON in (the editor's content, supporter_id), JSON out: subject, html, text, or problems by field."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="Send the editor's content as JSON."), 400
    if any(not isinstance(body.get(k, ""), str) for k in ("name", "subject", "preheader", "mjml", "text_body")):
        return jsonify(error="Every content field must be text."), 400
    supporter_id = body.get("supporter_id")
    if not (isinstance(supporter_id, int) and not isinstance(supporter_id, bool)):
        supporter_id = None
    rendered, problems, generated = service.preview_content(body, supporter_id)
    if problems:
        return jsonify(problems=problems)
    return jsonify(subject=rendered.subject, html=rendered.html, text=rendered.text, generated_text=generated)


@bp.route("/<int:campaign_id>/preview")
@requires("read")
def preview_page(campaign_id: int):
    """The saved campaign rendered as a supporter (or the sample), for a sandboxed iframe: no scripts."""
    campaign = _campaign_or_404(campaign_id)
    rendered, problems, _ = service.render_preview(campaign, request.args.get("supporter_id", type=positive_int))
    if problems:
        items = "".join(f"<li>{escape(field)}: {escape(m)}</li>" for field, ms in problems.items() for m in ms)
        html = f"<!doctype html><meta charset=utf-8><p>This campaign cannot be rendered yet:</p><ul>{items}</ul>"
    else:
        html = rendered.html
    return Response(html, mimetype="text/html", headers={
        "Content-Security-Policy": PREVIEW_CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})


@bp.route("/supporters")
@requires("read")
def find_supporters():
    """The "preview as supporter" picker: up to ten supporters whose address starts with ?q=."""
    return jsonify(supporters=service.find_supporters(request.args.get("q", "")[:320]))


# -- the campaign page and its actions ------------------------------------------------------

def _default_send_at() -> str:
    soon = to_local(datetime.now(org_zone()) + timedelta(hours=1))
    return soon.replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M")


def _readiness(campaign: Campaign) -> tuple[str, str, str]:
    """(why it cannot be sent, where to fix that, the link's label); ('', '', '') when it can.

    The organisation's settings are checked here first so the page can send staff to
    Settings rather than to the campaign editor, which cannot fix them.
    """
    problem = org.sending_problem()
    if problem:
        if current_user.is_authenticated and can("admin"):
            return problem, url_for("settings.index") + "#organisation", "Set the postal address in Settings"
        return problem + " An admin can set it under Settings.", "", ""
    problem = readiness_problem(campaign)
    if problem:
        return problem, url_for("campaigns.edit", campaign_id=campaign.id), "Edit the campaign"
    return "", "", ""


def _estimate(campaign: Campaign) -> int | None:
    try:
        return lifecycle.estimated_recipients(campaign)
    except RuleError:
        return None  # readiness_problem says why


@bp.route("/<int:campaign_id>")
@requires("read")
def show(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    test_form = TestSendForm(formdata=None, addresses=current_user.email)
    schedule_form = ScheduleForm(formdata=None)
    scheduled = to_local(campaign.scheduled_at)
    schedule_form.send_at.data = (scheduled.strftime("%Y-%m-%dT%H:%M") if scheduled and campaign.status == "scheduled"
                                  else _default_send_at())
    return _show(campaign, test_form, schedule_form)


def _show(campaign: Campaign, test_form: TestSendForm, schedule_form: ScheduleForm, status: int = 200):
    editable = campaign.is_editable
    zone = org_zone().key
    schedule_form.send_at.label.text = f"Send at ({zone} time)"
    progress = lifecycle.progress(campaign) if campaign.status != "draft" else None
    readiness, fix_url, fix_label = _readiness(campaign) if editable else ("", "", "")
    return render_template(
        "campaigns/show.html", campaign=campaign, form=ActionForm(), test_form=test_form,
        schedule_form=schedule_form, zone=zone, readiness=readiness, fix_url=fix_url, fix_label=fix_label,
        estimate=_estimate(campaign) if editable and campaign.segment is not None else None,
        progress=progress, live=campaign.status in LIVE_STATUSES,
        failed=service.problem_messages(campaign, ("failed", "bounced")) if progress else [],
        unknown=service.problem_messages(campaign, ("unknown",)) if progress else [],
    ), status


@bp.route("/<int:campaign_id>/progress")
@requires("read")
def progress(campaign_id: int):
    """Live counts for the campaign page, polled every two seconds while it runs."""
    campaign = _campaign_or_404(campaign_id)
    data = lifecycle.progress(campaign).as_json()
    data["finished_at"] = local_time(campaign.finished_at)
    return jsonify(data)


@bp.route("/<int:campaign_id>/test", methods=["POST"])
@requires("send")
def test_send(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    form = TestSendForm()
    if form.validate_on_submit():
        supporter_id = positive_int(form.supporter_id.data)
        try:
            sent_to = lifecycle.send_test(campaign, form.addresses.data or "", supporter_id, current_user.id)
        except LifecycleError as exc:
            form.addresses.errors = [*form.addresses.errors, str(exc)]
        else:
            flash(f"Test queued to {', '.join(sent_to)}, marked [TEST]. It arrives within seconds.", "success")
            return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    schedule_form = ScheduleForm(formdata=None)
    schedule_form.send_at.data = _default_send_at()
    return _show(campaign, form, schedule_form, 400)


@bp.route("/<int:campaign_id>/send", methods=["GET", "POST"])
@requires("send")
def send(campaign_id: int):
    """GET: the confirm step, with the recipient estimate. POST: send now."""
    campaign = _campaign_or_404(campaign_id)
    form = ActionForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        try:
            lifecycle.send_now(campaign, current_user.id)
        except LifecycleError as exc:
            flash(f"Not sent. {exc}", "error")
        else:
            flash("Sending has started.", "success")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    if campaign.status not in ("draft", "scheduled"):
        flash(f"A {campaign.status} campaign cannot be sent again.", "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    problem, fix_url, fix_label = _readiness(campaign)
    return render_template("campaigns/confirm.html", campaign=campaign, form=form, action="send",
                           problem=problem, fix_url=fix_url, fix_label=fix_label,
                           estimate=None if problem else _estimate(campaign))


@bp.route("/<int:campaign_id>/schedule", methods=["POST"])
@requires("send")
def schedule(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    form = ScheduleForm()
    if form.validate_on_submit():
        try:
            when = service.parse_local_time(form.send_at.data)
            lifecycle.schedule(campaign, when, current_user.id)
        except LifecycleError as exc:
            form.send_at.errors = [*form.send_at.errors, str(exc)]
        else:
            flash(f"Scheduled for {local_time(campaign.scheduled_at)}.", "success")
            return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    return _show(campaign, TestSendForm(formdata=None, addresses=current_user.email), form, 400)


def _transition(campaign_id: int, action, done: str):
    campaign = _campaign_or_404(campaign_id)
    require_action_form()
    try:
        action(campaign, current_user.id)
    except LifecycleError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


@bp.route("/<int:campaign_id>/unschedule", methods=["POST"])
@requires("send")
def unschedule(campaign_id: int):
    return _transition(campaign_id, lifecycle.unschedule, "Unscheduled: the campaign is a draft again.")


@bp.route("/<int:campaign_id>/pause", methods=["POST"])
@requires("send")
def pause(campaign_id: int):
    return _transition(campaign_id, lifecycle.pause, "Paused. Workers stop within a second; resume at any time.")


@bp.route("/<int:campaign_id>/resume", methods=["POST"])
@requires("send")
def resume(campaign_id: int):
    return _transition(campaign_id, lifecycle.resume, "Resumed.")


@bp.route("/<int:campaign_id>/cancel", methods=["GET", "POST"])
@requires("send")
def cancel(campaign_id: int):
    """GET: the confirm step. POST: cancel; messages not yet sent never will be."""
    if request.method == "POST":
        return _transition(campaign_id, lifecycle.cancel, "Cancelled. Messages not yet sent will not be sent.")
    campaign = _campaign_or_404(campaign_id)
    if campaign.status not in LIVE_STATUSES:
        flash("Only a scheduled, sending or paused campaign can be cancelled.", "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign.id))
    progress_now = lifecycle.progress(campaign)
    return render_template("campaigns/confirm.html", campaign=campaign, form=ActionForm(), action="cancel",
                           progress=progress_now, problem="", estimate=None)


@bp.route("/<int:campaign_id>/duplicate", methods=["POST"])
@requires("write")
def duplicate(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    require_action_form()
    copy = service.duplicate_campaign(campaign, current_user.id)
    flash(f"Copied as “{copy.name}”.", "success")
    return redirect(url_for("campaigns.edit", campaign_id=copy.id))


@bp.route("/<int:campaign_id>/delete", methods=["POST"])
@requires("write")
def delete(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    require_action_form()
    name = campaign.name
    try:
        service.delete_draft(campaign, current_user.id)
    except LifecycleError as exc:
        flash(f"Not deleted. {exc}", "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    flash(f"Deleted “{name}”.", "success")
    return redirect(url_for("campaigns.index"))


# -- the template library -------------------------------------------------------------------

@bp.route("/templates")
@requires("read")
def templates():
    return render_template("campaigns/templates.html", templates=service.templates(), form=ActionForm())


@bp.route("/templates/new", methods=["GET", "POST"])
@requires("write")
def new_template():
    form = TemplateForm()
    if request.method == "GET":
        form.mjml.data = service.default_template_mjml()
    return _save_template(form, None)


@bp.route("/templates/<int:template_id>", methods=["GET", "POST"])
@requires("write")
def edit_template(template_id: int):
    template = _template_or_404(template_id)
    return _save_template(TemplateForm(obj=template), template)


def _save_template(form: TemplateForm, template: EmailTemplate | None):
    if request.method == "POST" and form.validate_on_submit():
        try:
            saved = service.save_template({"name": form.name.data, "mjml": form.mjml.data}, template, current_user.id)
        except service.Invalid as exc:
            apply_errors(form, exc.errors)
        else:
            flash(f"Template “{saved.name}” saved.", "success")
            return redirect(url_for("campaigns.templates"))
    status = 400 if request.method == "POST" else 200
    return render_template("campaigns/template_edit.html", form=form, template=template,
                           delete_form=ActionForm()), status


@bp.route("/templates/<int:template_id>/delete", methods=["POST"])
@requires("write")
def delete_template(template_id: int):
    template = _template_or_404(template_id)
    require_action_form()
    name = template.name
    service.delete_template(template, current_user.id)
    flash(f"Deleted the template “{name}”. Campaigns made from it keep their content.", "success")
    return redirect(url_for("campaigns.templates"))

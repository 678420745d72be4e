"""A/B test pages of a campaign: set up the variants, and pick a winner by hand (thin views over campaigns.variants)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields import SelectChoice
from wtforms.validators import DataRequired, NumberRange, Optional

from campaigns import variants
from crm.auth.permissions import requires
from crm.extensions import db
from crm.forms import require_action_form
from crm.input_guard import positive_int
from crm.models import Campaign

bp = Blueprint("ab_tests", __name__, url_prefix="/campaigns")


class AbTestForm(FlaskForm):
    percent = IntegerField("Test on this share of the segment (%)", default=20,
                           validators=[DataRequired(), NumberRange(1, 100)])
    wait_minutes = IntegerField("Then wait (minutes) before picking the winner", default=240,
                                validators=[Optional(), NumberRange(0, 7 * 24 * 60)])
    metric = SelectField("Pick the winner by", default="opens", choices=[
        SelectChoice("opens", "Unique opens by people"), SelectChoice("clicks", "Unique clicks by people")])
    subject_b, from_name_b, mjml_b = (StringField("B: subject"), StringField("B: sender name"),
                                      TextAreaField("B: body (MJML)"))
    subject_c, from_name_c, mjml_c = (StringField("C: subject"), StringField("C: sender name"),
                                      TextAreaField("C: body (MJML)"))
    subject_d, from_name_d, mjml_d = (StringField("D: subject"), StringField("D: sender name"),
                                      TextAreaField("D: body (MJML)"))


def _campaign_or_404(campaign_id: int) -> Campaign:
    return db.session.get(Campaign, campaign_id) or abort(404)


@bp.route("/<int:campaign_id>/ab", methods=["GET", "POST"])
@requires("write")
def setup(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    form = AbTestForm()
    test, found = variants.test_for(campaign.id), variants.variants_of(campaign.id)
    if request.method == "GET" and test is not None:
        form.percent.data, form.wait_minutes.data, form.metric.data = (
            round(test.test_fraction * 100), test.wait_minutes, test.metric)
        for variant in found[1:]:
            suffix = variant.label.lower()
            getattr(form, f"subject_{suffix}").data = variant.subject
            getattr(form, f"from_name_{suffix}").data = variant.from_name
            getattr(form, f"mjml_{suffix}").data = variant.mjml
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            others = [{"subject": getattr(form, f"subject_{s}").data, "from_name": getattr(form, f"from_name_{s}").data,
                       "mjml": getattr(form, f"mjml_{s}").data} for s in ("b", "c", "d")]
            try:
                variants.save_test(campaign, fraction=form.percent.data / 100, wait_minutes=form.wait_minutes.data or 0,
                                   metric=form.metric.data, others=others, actor_id=current_user.id)
            except variants.VariantProblem as exc:
                db.session.rollback()
                form.form_errors.append(str(exc))
                status = 400
            else:
                flash("A/B test saved: it starts when the campaign is sent.", "success")
                return redirect(url_for("campaigns.show", campaign_id=campaign.id))
        else:
            status = 400
    return render_template("campaigns/ab_test.html", campaign=campaign, form=form, test=test), status


@bp.route("/<int:campaign_id>/ab/remove", methods=["POST"])
@requires("write")
def remove(campaign_id: int):
    require_action_form()
    campaign = _campaign_or_404(campaign_id)
    try:
        variants.remove_test(campaign, actor_id=current_user.id)
    except variants.VariantProblem as exc:
        flash(str(exc), "error")
    return redirect(url_for("campaigns.show", campaign_id=campaign.id))


@bp.route("/<int:campaign_id>/ab/pick", methods=["POST"])
@requires("send")
def pick(campaign_id: int):
    require_action_form()
    campaign = _campaign_or_404(campaign_id)
    variant_id = positive_int(request.form.get("variant_id"))
    if variant_id is None:
        abort(400)
    try:
        variants.decide(campaign.id, variant_id, actor_id=current_user.id)
    except variants.VariantProblem as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        flash("Winner picked: it goes to the rest of the segment now.", "success")
    return redirect(url_for("reports.campaign", campaign_id=campaign.id))

"""Staff petition pages: thin views over crm.petitions.service."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from markupsafe import escape
from werkzeug.routing import BuildError

from crm.auth.permissions import requires
from crm.extensions import db
from crm.forms import apply_errors, check_all
from crm.models import Petition
from crm.petitions import bp, confirmation, service
from crm.petitions.forms import PetitionForm


def _petition_or_404(petition_id: int) -> Petition:
    return db.session.get(Petition, petition_id) or abort(404)


def _export_url(petition: Petition) -> str:
    """The signer export built by the supporters feature (a literal path until it exists)."""
    try:
        return url_for("supporters.export", petition=petition.id, format="csv")
    except BuildError:
        return f"/supporters/export?petition={petition.id}&format=csv"


def _public_url(endpoint: str, petition: Petition) -> str:
    """Absolute public address on BASE_URL (what supporters see), not the staff host."""
    return current_app.config["BASE_URL"].rstrip("/") + url_for(endpoint, slug=petition.slug)


def embed_snippet(embed_url: str, title: str) -> str:
    """The HTML partners paste into their pages, every value escaped for its attribute.

    Returned as plain text: the page escapes it once more to show it, so what staff copy is
    exactly this, and a title with quotes or markup cannot add attributes or elements to a
    partner's page.
    """
    return (f'<iframe src="{escape(embed_url)}" width="100%" height="720" style="border:0" '
            f'title="{escape(title)}"></iframe>')


@bp.app_template_filter("markdown")
def markdown_filter(text: str):
    return service.render_markdown(text)


@bp.app_template_filter("markdown_lead")
def markdown_lead_filter(text: str):
    return service.render_markdown_lead(text)


@bp.route("/")
@requires("read")
def index():
    petitions = db.session.scalars(db.select(Petition).order_by(Petition.created_at.desc()))
    return render_template("petitions/index.html", petitions=list(petitions),
                           counts=service.signature_counts())


@bp.route("/new", methods=["GET", "POST"])
@requires("write")
def new():
    form = PetitionForm()
    if request.method == "GET":
        form.consent_wording.data = service.default_wording()
    return _save(form, None)


@bp.route("/<int:petition_id>/edit", methods=["GET", "POST"])
@requires("write")
def edit(petition_id: int):
    petition = _petition_or_404(petition_id)
    form = PetitionForm(obj=petition)
    return _save(form, petition)


def _save(form: PetitionForm, petition: Petition | None):
    if request.method == "POST" and check_all(form, lambda: service.problems(form.data_for_service(), petition)):
        try:
            saved = service.save_petition(form.data_for_service(), petition)
        except service.PetitionInvalid as exc:
            apply_errors(form, exc.errors)
        else:
            flash("Petition saved." if petition else "Petition created as a draft.", "success")
            return redirect(url_for("petitions.show", petition_id=saved.id))
    status = 400 if request.method == "POST" else 200
    return render_template("petitions/edit.html", form=form, petition=petition), status


@bp.route("/<int:petition_id>")
@requires("read")
def show(petition_id: int):
    petition = _petition_or_404(petition_id)
    stats = service.petition_stats(petition)
    pending, pending_total = confirmation.pending_signers(petition.id)
    return render_template(
        "petitions/show.html", petition=petition, stats=stats,
        peak=max((n for _, n in stats.per_day), default=0),
        signers=service.newest_signers(petition), wordings=service.wording_history(petition),
        public_url=_public_url("public.petition", petition),
        embed_snippet=embed_snippet(_public_url("public.embed", petition), petition.title),
        export_url=_export_url(petition), pending=pending, pending_total=pending_total,
    )


@bp.route("/<int:petition_id>/publish", methods=["POST"])
@requires("write")
def publish(petition_id: int):
    return _change_status(petition_id, "publish")


@bp.route("/<int:petition_id>/close", methods=["POST"])
@requires("write")
def close(petition_id: int):
    return _change_status(petition_id, "close")


@bp.route("/<int:petition_id>/archive", methods=["POST"])
@requires("write")
def archive(petition_id: int):
    return _change_status(petition_id, "archive")


def _change_status(petition_id: int, action: str):
    petition = _petition_or_404(petition_id)
    try:
        service.change_status(petition, action)
    except ValueError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Petition is now {petition.status}.", "success")
    return redirect(url_for("petitions.show", petition_id=petition.id))

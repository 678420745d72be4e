"""Petitions, staff side."""

from flask import Blueprint, abort, render_template

from crm.auth.permissions import requires
from crm.extensions import db
from crm.models import Petition, Signature

bp = Blueprint("petitions", __name__, url_prefix="/petitions")


def signature_counts() -> dict[int, int]:
    """Signature count per petition id, in one grouped query."""
    return dict(db.session.execute(
        db.select(Signature.petition_id, db.func.count()).group_by(Signature.petition_id)
    ).all())


@bp.route("/")
@requires("read")
def index():
    petitions = db.session.scalars(db.select(Petition).order_by(Petition.created_at.desc()))
    return render_template("petitions/index.html", petitions=list(petitions), counts=signature_counts())


@bp.route("/<int:petition_id>")
@requires("read")
def show(petition_id: int):
    petition = db.session.get(Petition, petition_id) or abort(404)
    count = signature_counts().get(petition.id, 0)
    return render_template("petitions/show.html", petition=petition, count=count)

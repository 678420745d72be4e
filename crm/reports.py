"""Reports: read-only figures for analysts and everyone else."""

from flask import Blueprint, render_template

from crm.auth.permissions import requires
from crm.extensions import db
from crm.models import ConsentEvent, Petition
from crm.petitions.service import NO_SIGNATURES, consent_figures

bp = Blueprint("reports", __name__, url_prefix="/reports")


def petition_report() -> list[dict]:
    """Per petition: signatures, the opt-in rate at signing, and the share of signers subscribed now."""
    figures = consent_figures()
    rows = db.session.execute(db.select(Petition.id, Petition.title, Petition.status, Petition.goal)
                              .order_by(Petition.id)).all()
    return [{"id": r.id, "title": r.title, "status": r.status, "goal": r.goal,
             "figures": figures.get(r.id, NO_SIGNATURES)} for r in rows]


def consent_report() -> list[tuple[str, str, int]]:
    """Consent events by action and source: how people joined and left."""
    return db.session.execute(
        db.select(ConsentEvent.action, ConsentEvent.source, db.func.count())
        .group_by(ConsentEvent.action, ConsentEvent.source)
        .order_by(db.func.count().desc()).limit(50)
    ).all()


@bp.route("/")
@requires("read")
def index():
    return render_template("reports/index.html", petitions=petition_report(), consent=consent_report())

"""Reports: read-only figures for analysts and everyone else."""

from flask import Blueprint, render_template

from crm.auth.permissions import requires
from crm.extensions import db
from crm.models import ConsentEvent, Petition, Signature, Supporter

bp = Blueprint("reports", __name__, url_prefix="/reports")


def petition_report() -> list[dict]:
    """Per petition: signatures, and how many signers are subscribed now."""
    rows = db.session.execute(
        db.select(
            Petition.id, Petition.title, Petition.status, Petition.goal,
            db.func.count(Signature.id),
            db.func.count(Supporter.id).filter(Supporter.email_status == "subscribed"),
        )
        .outerjoin(Signature, Signature.petition_id == Petition.id)
        .outerjoin(Supporter, Supporter.id == Signature.supporter_id)
        .group_by(Petition.id, Petition.title, Petition.status, Petition.goal)
        .order_by(Petition.id)
    ).all()
    return [
        {"id": r[0], "title": r[1], "status": r[2], "goal": r[3], "signatures": r[4], "subscribed": r[5],
         "opt_in_rate": (r[5] / r[4]) if r[4] else None}
        for r in rows
    ]


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

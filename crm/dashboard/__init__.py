"""The staff home page: the numbers that matter today."""

from datetime import timedelta

from flask import Blueprint, render_template

from crm.auth.permissions import requires
from crm.extensions import db
from crm.models import Petition, Signature, Supporter, utcnow

bp = Blueprint("dashboard", __name__)


def dashboard_figures() -> dict:
    """Supporter counts by email status, open petitions, recent signatures."""
    by_status = dict(
        db.session.execute(
            db.select(Supporter.email_status, db.func.count()).where(Supporter.erased_at.is_(None))
            .group_by(Supporter.email_status)
        ).all()
    )
    week_ago = utcnow() - timedelta(days=7)
    return {
        "supporters": sum(by_status.values()),
        "subscribed": by_status.get("subscribed", 0),
        "by_status": by_status,
        "open_petitions": db.session.scalar(
            db.select(db.func.count()).select_from(Petition).where(Petition.status == "open")
        ),
        "signatures_week": db.session.scalar(
            db.select(db.func.count()).select_from(Signature).where(Signature.created_at >= week_ago)
        ),
    }


def newest_signatures(limit: int = 10) -> list[tuple[Signature, Supporter, Petition]]:
    """The latest signatures by signing time, which the page shows (an import brings its own dates,
    so ids are not in that order); ix_signature_created_at_id is walked backwards, `limit` rows."""
    return db.session.execute(
        db.select(Signature, Supporter, Petition)
        .join(Supporter, Signature.supporter_id == Supporter.id)
        .join(Petition, Signature.petition_id == Petition.id)
        .order_by(Signature.created_at.desc(), Signature.id.desc())
        .limit(limit)
    ).all()


@bp.route("/")
@requires("read")
def index():
    from feedback import health

    return render_template("dashboard.html", figures=dashboard_figures(), recent=newest_signatures(),
                           health=health.window())

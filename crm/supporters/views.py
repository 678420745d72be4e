from flask import abort, render_template, request

from crm.auth.permissions import requires
from crm.extensions import db
from crm.models import EMAIL_STATUSES, Supporter
from crm.supporters import bp, service


@bp.route("/")
@requires("read")
def index():
    flt = service.SupporterFilter.from_args(request.args)
    after = request.args.get("after", type=int)
    supporters, next_after = service.page_of_supporters(flt, after)
    return render_template(
        "supporters/index.html", supporters=supporters, next_after=next_after, flt=flt,
        statuses=EMAIL_STATUSES,
    )


@bp.route("/<int:supporter_id>")
@requires("read")
def show(supporter_id: int):
    supporter = db.session.get(Supporter, supporter_id)
    if supporter is None or supporter.erased_at is not None:
        abort(404)
    return render_template(
        "supporters/show.html", supporter=supporter,
        timeline=service.consent_timeline(supporter), signed=service.petitions_signed(supporter),
    )

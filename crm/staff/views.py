from flask import abort, flash, redirect, render_template, url_for

from crm.auth.permissions import requires
from crm.extensions import db
from crm.forms import check_all
from crm.models import StaffUser
from crm.staff import bp, service
from crm.staff.forms import StaffCreateForm, StaffEditForm


@bp.route("/")
@requires("admin")
def index():
    users = db.session.scalars(db.select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.email))
    return render_template("staff/index.html", users=list(users), form=StaffCreateForm())


@bp.route("/", methods=["POST"])
@requires("admin")
def create():
    form = StaffCreateForm()
    if check_all(form, lambda: service.new_staff_problems(form.email.data, form.role.data, form.password.data)):
        try:
            user = service.create_staff(form.email.data, form.role.data, form.password.data, form.name.data or "")
        except service.StaffError as exc:
            form.email.errors.append(str(exc))
        else:
            flash(f"Added {user.email} as {user.role}.", "success")
            return redirect(url_for("staff.index"))
    users = db.session.scalars(db.select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.email))
    return render_template("staff/index.html", users=list(users), form=form), 400


@bp.route("/<int:user_id>", methods=["GET", "POST"])
@requires("admin")
def edit(user_id: int):
    user = db.session.get(StaffUser, user_id) or abort(404)
    form = StaffEditForm(obj=user)
    status = 200
    if form.validate_on_submit():
        try:
            service.update_staff(user, role=form.role.data, name=form.name.data or "", active=form.active.data)
            if form.password.data:
                service.set_password(user, form.password.data)
        except service.StaffError as exc:
            db.session.rollback()
            form.role.errors.append(str(exc))
            status = 400
        else:
            flash(f"Saved {user.email}.", "success")
            return redirect(url_for("staff.index"))
    elif form.is_submitted():
        status = 400
    return render_template("staff/edit.html", user=user, form=form), status

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from crm.auth import bp, throttle
from crm.auth.forms import LoginForm
from crm.auth.permissions import public, requires
from crm.extensions import db, login_manager
from crm.models import StaffUser, utcnow
from crm.models.staff import password_matches
from crm.security_headers import NOBODY, framed_by
from crm.urls import is_safe_next


@login_manager.user_loader
def load_user(user_id: str):
    return db.session.get(StaffUser, int(user_id)) if user_id.isdigit() else None


@bp.route("/login", methods=["GET", "POST"])
@public
@framed_by(NOBODY)  # public, but a staff page
def login():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    next_url = request.args.get("next")
    status = 200
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        ip = request.remote_addr or "unknown"
        if throttle.is_blocked(email, ip):
            minutes = current_app.config["LOGIN_WINDOW_SECONDS"] // 60
            form.form_errors.append(
                f"Too many failed sign-in attempts. Wait {minutes} minutes and try again."
            )
            status = 429
        else:
            user = db.session.scalar(db.select(StaffUser).filter_by(email=email))
            # The password is checked before `active`, so a deactivated account costs what any other does.
            if password_matches(user, form.password.data) and user.active:
                throttle.clear_failures(email, ip)
                user.last_login_at = utcnow()
                db.session.commit()
                login_user(user, remember=form.remember.data)
                return redirect(next_url if is_safe_next(next_url) else url_for("dashboard.index"))
            throttle.record_failure(email, ip)
            form.form_errors.append("That email and password do not match an active account.")
            status = 401
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@requires("read")
def logout():
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))

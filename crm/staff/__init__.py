"""Staff accounts: the admin pages and the `crm users` commands share staff.service."""

from flask import Blueprint

bp = Blueprint("staff", __name__, url_prefix="/settings/staff")

from crm.staff import views  # noqa: E402,F401

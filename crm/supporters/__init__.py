"""The supporter CRM: list, search and profile."""

from flask import Blueprint

bp = Blueprint("supporters", __name__, url_prefix="/supporters")

from crm.supporters import views  # noqa: E402,F401

"""Public pages: petition sign forms (no staff login)."""

from flask import Blueprint

bp = Blueprint("public", __name__)

from crm.public import views  # noqa: E402,F401

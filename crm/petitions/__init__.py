"""Petitions, staff side: list, create, edit, publish/close/archive and the petition report."""

from flask import Blueprint

bp = Blueprint("petitions", __name__, url_prefix="/petitions")

from crm.petitions import views  # noqa: E402,F401

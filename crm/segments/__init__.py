"""Segments: a rule builder that compiles to one SQL query, with live counts."""

from flask import Blueprint

bp = Blueprint("segments", __name__, url_prefix="/segments")

from crm.segments import views  # noqa: E402,F401

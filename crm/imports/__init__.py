"""Supporter imports from CSV/XLSX files."""

from flask import Blueprint

bp = Blueprint("imports", __name__, url_prefix="/imports")

from crm.imports import views  # noqa: E402,F401  (registers the routes)

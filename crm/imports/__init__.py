"""Supporter imports from CSV/XLSX files."""

from flask import Blueprint

bp = Blueprint("imports", __name__, url_prefix="/imports")

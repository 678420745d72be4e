"""Public pages: petition sign forms (no staff login)."""

from flask import Blueprint

bp = Blueprint("public", __name__)

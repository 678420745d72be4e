"""Staff sign-in, sign-out and the session user loader."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from crm.auth import views  # noqa: E402,F401  (registers routes on bp)

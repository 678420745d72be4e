"""The dev outbox: every message the built-in SMTP sink received, shown as a mail client would."""

from flask import Blueprint

bp = Blueprint("outbox", __name__, url_prefix="/outbox")

from crm.outbox import views  # noqa: E402,F401

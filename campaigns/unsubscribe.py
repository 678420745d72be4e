"""Public unsubscribe pages: /u/<token> (confirm, then POST) and the RFC 8058 one-click POST."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("unsubscribe", __name__)

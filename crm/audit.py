"""Write audit-log rows for sensitive actions (exports, sends, staff changes)."""

from __future__ import annotations

from flask import has_request_context, request
from flask_login import current_user

from crm.extensions import db
from crm.models import AuditLog


def record(action: str, target: str = "", *, actor_id: int | None = None, **details) -> AuditLog:
    """Add an audit row to the session; the caller's transaction commits it."""
    ip = None
    if has_request_context():
        ip = request.remote_addr
        if actor_id is None and current_user.is_authenticated:
            actor_id = current_user.id
    entry = AuditLog(staff_user_id=actor_id, action=action, target=target, details=details, ip=ip)
    db.session.add(entry)
    return entry

"""The one permission mechanism: every endpoint declares what it needs; no rule means no entry.

Roles grant permissions; views declare one permission with @requires(...) or are marked
@public. A before_request guard enforces it, and refuses any endpoint that declared
nothing, so a new view without a rule fails closed (and fails the access-control test).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, abort, current_app, request
from flask_login import current_user

PUBLIC = "public"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "analyst": frozenset({"read", "export"}),
    "organizer": frozenset({"read", "export", "write", "send"}),
    "admin": frozenset({"read", "export", "write", "send", "admin"}),
}
PERMISSIONS = frozenset().union(*ROLE_PERMISSIONS.values())


def requires(permission: str) -> Callable:
    """Mark a view as needing `permission` (read, export, write, send or admin)."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def mark(view: Callable) -> Callable:
        view.access = permission
        return view

    return mark


def public(view: Callable) -> Callable:
    """Mark a view as open to anyone, signed in or not."""
    view.access = PUBLIC
    return view


def role_can(role: str | None, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS.get(role or "", frozenset())


def can(permission: str) -> bool:
    """Whether the signed-in staff user holds `permission` (for templates and views)."""
    return bool(current_user.is_authenticated and role_can(current_user.role, permission))


def access_rule(app: Flask, endpoint: str) -> str | None:
    view = app.view_functions.get(endpoint)
    return getattr(view, "access", None)


def enforce_access():
    """before_request: allow, send to sign-in, or refuse with 403."""
    if request.endpoint is None:
        return None  # routing failed; the 404/405 handler answers
    rule = access_rule(current_app, request.endpoint)
    if rule == PUBLIC:
        return None
    if rule is None:
        current_app.logger.error("endpoint %s declares no access rule; refused", request.endpoint)
        abort(403)
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    if not role_can(current_user.role, rule):
        abort(403)
    return None


def init_app(app: Flask) -> None:
    # Registered before CSRFProtect so a forbidden request is refused as 403, not 400.
    app.view_functions["static"].access = PUBLIC
    app.before_request(enforce_access)
    app.jinja_env.globals["can"] = can

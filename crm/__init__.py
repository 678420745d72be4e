"""Supporter CRM: the application factory."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def instance_folder() -> Path:
    """Where local state lives (SQLite file, embedded Redis, outbox): CRM_INSTANCE_PATH or ./instance."""
    return Path(os.environ.get("CRM_INSTANCE_PATH") or ROOT / "instance")


class CRMFlask(Flask):
    """Flask, logging a failed request without the tokens its URL may carry (crm/logs.py)."""

    def log_exception(self, exc_info) -> None:
        from flask import request

        from crm.logs import logged_path

        self.logger.error(f"Exception on {logged_path(request.path, request.view_args)} [{request.method}]",
                          exc_info=exc_info)


def create_app(config: dict | None = None) -> Flask:
    """Build the app from environment settings, overridden by `config` (as tests do)."""
    import api
    import outbound
    from crm import cross_origin, errors, events, filters, input_guard, logs, security_headers
    from crm.auth import permissions
    from crm.blueprints import register_blueprints
    from crm.config import load_config
    from crm.database import init_database
    from crm.extensions import csrf, db, login_manager, migrate
    from crm.supporters import withdrawn

    app = CRMFlask(
        __name__,
        instance_path=str((config or {}).get("INSTANCE_PATH") or instance_folder()),
        template_folder=str(ROOT / "templates"),
        static_folder="static",
    )
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.update(load_config(app.instance_path, config))
    logs.init_app(app)

    if app.config.get("PROXY_COUNT"):
        from werkzeug.middleware.proxy_fix import ProxyFix

        count = int(app.config["PROXY_COUNT"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)

    init_database(app)
    withdrawn.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    security_headers.init_app(app)  # before the blueprints, so its hook has the last word
    register_blueprints(app)
    permissions.init_app(app)  # before CSRF: a forbidden request is a 403, not a 400
    input_guard.init_app(app)  # before anything reads the form
    cross_origin.init_app(app)
    csrf.init_app(app)
    errors.init_app(app)
    api.init_app(app)  # after errors: API requests get JSON errors instead of pages
    outbound.init_app(app)
    events.init_app(app)
    filters.init_app(app)
    from crm import cli

    cli.init_app(app)
    return app

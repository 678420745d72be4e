"""The OSDI v1 REST API under /api/v1/: HAL+JSON, authenticated by API keys, never by cookies.

Requests to /api/ carry no cookie into the app: the Cookie header is dropped before Flask
opens the session, so a staff member's session can never authorise (or be changed by) an
API call, and no answer sets one. The blueprint is therefore exempt from CSRF (there is no
ambient authority to forge) and open to any origin. Every error is JSON, including 404s for
unknown paths and bodies over API_MAX_BODY_BYTES (a 400 naming the body).
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api.errors import ApiError, error_response

log = logging.getLogger(__name__)

PREFIX = "/api/"

bp = Blueprint("api", __name__, url_prefix="/api/v1")


class _NoCookies:
    """WSGI middleware: API requests reach the app without the Cookie header."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(PREFIX):
            environ.pop("HTTP_COOKIE", None)
        return self.wsgi_app(environ, start_response)


def is_api_request() -> bool:
    return request.path.startswith(PREFIX)


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    from crm.extensions import db

    db.session.rollback()
    return error_response(exc.status, exc.message, exc.field, exc.headers)


def _limit_body():
    """before_request, ahead of the input guard: bound what an API request may send."""
    if is_api_request():
        from flask import current_app, g

        g.api_started = time.perf_counter()
        request.max_content_length = int(current_app.config["API_MAX_BODY_BYTES"])


@bp.after_request
def _server_timing(response):
    """Say how long the app took (Server-Timing, W3C), so clients and the bench can tell it from the network."""
    from flask import g

    started = g.get("api_started")
    if started is not None:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


def register(app: Flask) -> None:
    """Register the API's routes and the body limit (before the input guard reads any body)."""
    from api import openapi, views  # noqa: F401 (registers the routes)
    from api.settings import bp as settings_bp
    from crm.extensions import csrf

    csrf.exempt(bp)
    app.register_blueprint(bp)
    app.register_blueprint(settings_bp)
    app.before_request(_limit_body)


def init_app(app: Flask) -> None:
    """After the app's own error pages: no cookies for API requests, and JSON errors for them."""
    from werkzeug.exceptions import InternalServerError

    app.wsgi_app = _NoCookies(app.wsgi_app)
    html_handler = app.error_handler_spec[None][None].get(HTTPException)
    html_500 = app.error_handler_spec[None][500].get(InternalServerError)  # Flask files it under its code

    def server_error(exc):
        if not is_api_request():
            return html_500(exc) if html_500 else exc
        from crm.extensions import db

        db.session.rollback()
        return error_response(500, "Something went wrong; the error has been logged.")

    app.register_error_handler(InternalServerError, server_error)

    def http_error(exc: HTTPException):
        if not is_api_request():
            return html_handler(exc) if html_handler else exc
        if isinstance(exc, RequestEntityTooLarge):
            limit = app.config["API_MAX_BODY_BYTES"]
            return error_response(400, f"The body is larger than this API accepts ({limit} bytes).", "(body)")
        if exc.code is None or exc.code < 400:
            return exc
        from crm.extensions import db

        db.session.rollback()
        return error_response(exc.code, exc.description or exc.name)

    app.register_error_handler(HTTPException, http_error)

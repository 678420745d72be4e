"""Error pages in the app's own look; nothing ends in a bare 500."""

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from crm.extensions import db

MESSAGES = {
    400: ("Bad request", "The request could not be understood. Go back and try again."),
    403: ("Not allowed", "Your account does not have access to this page."),
    404: ("Not found", "There is nothing at this address."),
    405: ("Not allowed", "That action is not available here."),
    413: ("Too large", "The upload is larger than this server accepts."),
    429: ("Slow down", "Too many requests. Wait a little and try again."),
    500: ("Something went wrong", "The error has been logged. Try again in a moment."),
}


def render_error(code: int, detail: str | None = None):
    title, message = MESSAGES.get(code, (str(code), "The request could not be completed."))
    return render_template("errors/error.html", code=code, title=title, message=detail or message), code


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return render_error(400, "The form expired or was sent from elsewhere. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code is None or exc.code < 400:
            return exc
        return render_error(exc.code)

    @app.errorhandler(InternalServerError)
    def server_error(exc):
        db.session.rollback()
        return render_error(500)

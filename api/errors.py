"""The API's errors: JSON bodies with a message and, when one is to blame, the field."""

from __future__ import annotations

from flask import jsonify


class ApiError(Exception):
    """Answer `status` with {"error": message, "field": field}; nothing was written."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None,
                   errors: list[dict] | None = None):
    body: dict = {"error": message}
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response

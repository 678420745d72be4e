"""What every staff form shares: the bare CSRF form behind action buttons, and putting a
service's field errors beside the fields."""

from __future__ import annotations

from flask import abort
from flask_wtf import FlaskForm


class ActionForm(FlaskForm):
    """Buttons that only act (duplicate, delete, pause...): the CSRF token and nothing else."""


def require_action_form() -> None:
    """400 unless the POST carries a valid CSRF token."""
    if not ActionForm().validate_on_submit():
        abort(400)


def apply_errors(form: FlaskForm, errors: dict[str, list[str]]) -> None:
    """Errors from a service, keyed by field name; those for no field go on top of the form."""
    for name, messages in errors.items():
        field = getattr(form, name, None)
        if field is None:
            form.form_errors.extend(messages)
        else:
            field.errors = [*field.errors, *messages]

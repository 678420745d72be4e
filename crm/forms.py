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


def apply_errors(form: FlaskForm, errors: dict[str, list[str] | str]) -> None:
    """Errors from a service, keyed by field name; those for no field go on top of the form.

    A field the form's own validators already refused keeps their message alone (the service
    would only say the same thing again in other words), and no message is listed twice.
    """
    for name, messages in errors.items():
        messages = [messages] if isinstance(messages, str) else list(messages)
        field = getattr(form, name, None)
        if field is None:
            form.form_errors.extend(m for m in dict.fromkeys(messages) if m not in form.form_errors)
        elif not field.errors:
            field.errors = list(dict.fromkeys(messages))


def check_all(form: FlaskForm, problems) -> bool:
    """Validate the submitted form and the service's rules together, so one submit shows every error.

    `problems()` returns the service's errors by field for the form's data (it runs whatever
    the form's own validators found); they are put beside the fields with apply_errors. True
    when neither found anything. The service still checks again when it saves.
    """
    valid = form.validate_on_submit()
    found = problems()
    apply_errors(form, found)
    return valid and not found

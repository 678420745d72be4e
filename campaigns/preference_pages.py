"""The public preference page: /preferences/<token>, from every message's footer, with no login.

GET shows the supporter's names and postal code, the pause choices and an unsubscribe button;
each is its own small form with a CSRF token (Flask-WTF, bound to a session cookie the page
sets). Like the unsubscribe pages, it is not indexed, cached or framed and sends no Referer
(campaigns.unsubscribe.PRIVATE_HEADERS), which is why the forms check their token themselves
(FlaskForm.validate) and the view is exempt from the global check: over HTTPS that one also
demands a same-origin Referer. A tampered link gets the unsubscribe pages' friendly 400.
Plain HTML forms: it works without JavaScript, and the public stylesheet fits a phone.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_wtf import FlaskForm
from wtforms import HiddenField, RadioField, StringField
from wtforms.fields import SelectChoice

from campaigns import optout, preferences
from campaigns.tokens import is_test_preferences_token, make_unsubscribe_token, read_preferences_token
from campaigns.unsubscribe import PRIVATE_HEADERS
from crm.auth.permissions import public
from crm.extensions import csrf
from crm.supporters.service import ProfileInvalid

bp = Blueprint("preferences", __name__)


class DetailsForm(FlaskForm):
    action = HiddenField(default="details")
    first_name = StringField("First name")
    last_name = StringField("Last name")
    postal_code = StringField("Postal code")


class PauseForm(FlaskForm):
    action = HiddenField(default="pause")
    days = RadioField("Pause for", choices=[SelectChoice(str(d), f"{d} days") for d in preferences.PAUSE_DAYS],
                      default="30")


class ActionOnlyForm(FlaskForm):
    action = HiddenField()


@bp.after_app_request
def private_headers(response):
    """Every answer under /preferences/: not indexed, not cached, not framed, no Referer."""
    if request.path.startswith("/preferences/"):
        response.headers.update(PRIVATE_HEADERS)
    return response


@bp.route("/preferences/<preferences_token>", methods=["GET", "POST"])
@public
@csrf.exempt  # each form checks its own token (see the module docstring)
def page(preferences_token: str):
    token = preferences_token
    if is_test_preferences_token(token):
        return render_template("unsubscribe/test.html")
    message_id = read_preferences_token(token)
    person = preferences.person_for(message_id) if message_id else None
    if person is None:
        return render_template("unsubscribe/invalid.html"), 400
    supporter = person.supporter
    details = DetailsForm(formdata=None, first_name=supporter.first_name, last_name=supporter.last_name,
                          postal_code=supporter.postal_code)
    pause_form = PauseForm(formdata=None)
    done, status = "", 200
    if request.method == "POST":
        action = request.form.get("action", "")
        who = {"ip": request.remote_addr, "user_agent": request.user_agent.string}
        if action == "details":
            details = DetailsForm()
            if not details.validate():
                return _expired(token)
            try:
                changed = preferences.update_details(person, first_name=details.first_name.data or "",
                                                     last_name=details.last_name.data or "",
                                                     postal_code=details.postal_code.data or "", **who)
            except ProfileInvalid as exc:
                for name, messages in exc.errors.items():
                    if hasattr(details, name):
                        getattr(details, name).errors = list(messages)
                status = 422
            else:
                done = "Your details are saved." if changed else "Nothing had changed."
        elif action == "pause":
            pause_form = PauseForm()
            if not pause_form.validate():
                return _expired(token)
            until = preferences.pause(person, int(pause_form.days.data), **who)
            done = f"Paused. You will not receive our email updates before {until.day} {until:%B %Y}."
        elif action in ("resume", "unsubscribe"):
            if not ActionOnlyForm().validate():
                return _expired(token)
            if action == "resume":
                preferences.resume(person, **who)
                done = "Your email updates start again with our next one."
            else:
                outcome = optout.unsubscribe_by_message(person.message_id, preferences.SOURCE, **who)
                return render_template("unsubscribe/unsubscribed.html", token=make_unsubscribe_token(message_id),
                                       outcome=outcome, undo_button=optout.UNDO_BUTTON,
                                       undo_explanation=optout.undo_explanation())
        else:
            return render_template("unsubscribe/invalid.html"), 400
    person = preferences.person_for(message_id) or person
    return render_template("preferences/page.html", token=token, person=person, details=details,
                           pause_form=pause_form, action_form=ActionOnlyForm(formdata=None), done=done,
                           address=optout.masked_address(person.supporter.email),
                           unsubscribe_button=optout.unsubscribe_wording(optout.masked_address(person.supporter.email))
                           ), status


def _expired(token: str):
    return render_template("preferences/expired.html", token=token), 400

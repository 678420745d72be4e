"""The public sign form, and widgets that render it cheaply."""

from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from wtforms import BooleanField, HiddenField, SelectField, StringField, TextAreaField, widgets
from wtforms.validators import InputRequired, Length, Optional, ValidationError
from wtforms.widgets.core import clean_key

from crm.countries import countries, is_country_code
from crm.emails import InvalidEmail, normalise_email
from crm.supporters.fields import PROFILE_LIMITS, too_long

# ---- widgets -----------------------------------------------------------------------------------
#
# WTForms' html_params() builds every attribute with Markup.format (string.Formatter plus an
# escape per argument): the sign page took about 0.8 ms to render, four fifths of it there.
# These widgets are WTForms' own with that one function replaced (the page now renders in
# about 0.3 ms). The HTML is the same -- attributes sorted, True a bare attribute, values
# escaped -- except that an attribute whose value is None is left out, where WTForms wrote
# the text "None" (the template's aria-invalid / aria-describedby on a field without errors).

def html_params(**kwargs) -> Markup:
    """wtforms.widgets.html_params without Markup.format; None and False leave the attribute out."""
    params = []
    for key, value in sorted(kwargs.items()):
        if value is None or value is False:
            continue
        key = clean_key(key)
        if value is True:
            params.append(key)
        else:
            value = str(escape(value)).replace('"', "&quot;")  # a Markup value keeps its quotes
            params.append(f'{key}="{value}"')
    return Markup(" ".join(params))


class TextInput(widgets.TextInput):
    html_params = staticmethod(html_params)
    # No maxlength: a browser cuts a longer paste short without a word; the server refuses it
    # with a message instead (crm.supporters.fields.too_long).
    validation_attrs = ["required"]


class HiddenInput(widgets.HiddenInput):
    html_params = staticmethod(html_params)


class CheckboxInput(widgets.CheckboxInput):
    html_params = staticmethod(html_params)


class TextArea(widgets.TextArea):
    validation_attrs = ["required"]

    def __call__(self, field, **kwargs):
        """wtforms.widgets.TextArea.__call__ with the html_params above."""
        kwargs.setdefault("id", field.id)
        flags = getattr(field, "flags", {})
        for k in dir(flags):
            if k in self.validation_attrs and k not in kwargs:
                kwargs[k] = getattr(flags, k)
        return Markup(f"<textarea {html_params(name=field.name, **kwargs)}>\r\n"
                      f"{escape(field._value())}</textarea>")


HIDDEN = HiddenInput()

# The country select's options, by name (pycountry's ISO 3166-1 list); stored as the code.
COUNTRIES = countries()


# The longest value each field takes (the form's Length validators and quick_signature_data).
MAX_LENGTH = {"email": 320, **PROFILE_LIMITS, "comment": 2000}


def _length(name: str) -> Length:
    """Length(max=...) refusing with the words an import uses for the same field."""
    return Length(max=MAX_LENGTH[name], message=too_long(name, MAX_LENGTH[name]).capitalize() + ".")
SIGNATURE_FIELDS = ("email", "first_name", "last_name", "postal_code", "country", "comment", "consent",
                    "wording_version")


class SignForm(FlaskForm):
    class Meta:
        csrf = False  # no token on the public form: crm.cross_origin refuses cross-site posts

    email = StringField("Email", validators=[InputRequired("Enter your email address."),
                                             Length(max=MAX_LENGTH["email"])], widget=TextInput(),
                        render_kw={"autocomplete": "email", "inputmode": "email", "type": "email"})
    first_name = StringField("First name", validators=[InputRequired("Enter your first name."),
                                                       _length("first_name")], widget=TextInput(),
                             render_kw={"autocomplete": "given-name"})
    last_name = StringField("Last name", validators=[Optional(), _length("last_name")],
                            widget=TextInput(), render_kw={"autocomplete": "family-name"})
    postal_code = StringField("Postal code", validators=[Optional(), _length("postal_code")],
                              widget=TextInput(), render_kw={"autocomplete": "postal-code"})
    # Rendered by the template (public/_sign.html) from COUNTRIES; the organisation's country
    # is preselected on a fresh form.
    country = SelectField("Country", validators=[Optional()], choices=(), validate_choice=False)
    comment = TextAreaField("Comment (optional)", validators=[Optional(), _length("comment")],
                            widget=TextArea(), render_kw={"rows": 3})
    consent = BooleanField("I agree", widget=CheckboxInput())
    wording_version = HiddenField(widget=HIDDEN)
    # Honeypot: humans never see it (off-screen, aria-hidden, no tab stop); bots fill it.
    website = StringField("Website", widget=TextInput(), render_kw={"tabindex": "-1", "autocomplete": "off"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_submitted() and not self.country.data:
            from crm.settings import org

            self.country.data = org.current().country

    def validate_email(self, field):
        try:
            field.data = normalise_email(field.data or "")
        except InvalidEmail as exc:
            raise ValidationError(str(exc)) from None

    def validate_country(self, field):
        value = (field.data or "").strip().upper()
        if value and not is_country_code(value):
            raise ValidationError("Choose your country from the list.")
        field.data = value

    def signature_data(self) -> dict:
        """The fields record_signature reads."""
        return {name: getattr(self, name).data for name in SIGNATURE_FIELDS}


def quick_signature_data(formdata) -> dict | None:
    """SignForm(formdata).signature_data() when that form would validate without an error, else None.

    Building and validating the SignForm costs about 0.2 ms, a fifth of a signature's
    server time, and nearly every post is plainly valid. This accepts only what every
    validator of SignForm accepts (the required fields given, every length within
    MAX_LENGTH, a country blank or an ISO 3166-1 code, an address email-validator takes) and
    returns the same data; for anything else it returns None and the caller builds the
    SignForm, whose validation decides and whose messages the page shows.
    tests/test_signing.py checks the two against each other on generated input.
    """
    get = formdata.get
    data = {name: get(name) for name in SIGNATURE_FIELDS}
    if not data["email"] or not data["first_name"]:
        return None
    for name, longest in MAX_LENGTH.items():
        if data[name] is not None and len(data[name]) > longest:
            return None
    country = data["country"]
    if country is not None and country.strip():  # blank: SignForm's Optional() ends the checks
        country = data["country"] = country.strip().upper()
        if not is_country_code(country):
            return None
    try:
        data["email"] = normalise_email(data["email"])
    except InvalidEmail:
        return None
    data["consent"] = data["consent"] not in (None, "false", "")  # BooleanField's false_values
    return data

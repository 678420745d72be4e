"""The public sign form."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length, Optional, ValidationError

from crm.emails import InvalidEmail, normalise_email

# Suggestions for the country field (a <datalist>); any ISO 3166-1 alpha-2 code is accepted.
COUNTRIES = [
    ("GB", "United Kingdom"), ("IE", "Ireland"), ("FR", "France"),
    ("DE", "Germany"), ("ES", "Spain"), ("IT", "Italy"), ("NL", "Netherlands"), ("BE", "Belgium"),
    ("PT", "Portugal"), ("SE", "Sweden"), ("DK", "Denmark"), ("NO", "Norway"), ("FI", "Finland"),
    ("PL", "Poland"), ("AT", "Austria"), ("CH", "Switzerland"), ("GR", "Greece"),
    ("US", "United States"), ("CA", "Canada"), ("AU", "Australia"), ("NZ", "New Zealand"),
]


class SignForm(FlaskForm):
    email = StringField("Email", validators=[InputRequired("Enter your email address."),
                                             Length(max=320)],
                        render_kw={"autocomplete": "email", "inputmode": "email", "type": "email"})
    first_name = StringField("First name", validators=[InputRequired("Enter your first name."),
                                                       Length(max=100)],
                             render_kw={"autocomplete": "given-name"})
    last_name = StringField("Last name", validators=[Optional(), Length(max=100)],
                            render_kw={"autocomplete": "family-name"})
    postal_code = StringField("Postal code", validators=[Optional(), Length(max=20)],
                              render_kw={"autocomplete": "postal-code"})
    country = StringField("Country (two-letter code, e.g. GB)", validators=[Optional()],
                          render_kw={"autocomplete": "country", "maxlength": 2})
    comment = TextAreaField("Comment (optional)", validators=[Optional(), Length(max=2000)],
                            render_kw={"rows": 3})
    consent = BooleanField("I agree")
    wording_version = HiddenField()
    # Honeypot: humans never see it (off-screen, aria-hidden, no tab stop); bots fill it.
    website = StringField("Website", render_kw={"tabindex": "-1", "autocomplete": "off"})
    form_token = HiddenField()  # only the embed form uses it (see crm.public.views)

    def validate_email(self, field):
        try:
            field.data = normalise_email(field.data or "")
        except InvalidEmail as exc:
            raise ValidationError(str(exc)) from None

    def validate_country(self, field):
        value = (field.data or "").strip().upper()
        if value and (len(value) != 2 or not value.isalpha() or not value.isascii()):
            raise ValidationError("Use the two-letter country code, for example GB or FR.")
        field.data = value

    def signature_data(self) -> dict:
        """The fields record_signature reads."""
        return {name: getattr(self, name).data for name in (
            "email", "first_name", "last_name", "postal_code", "country", "comment", "consent",
            "wording_version")}

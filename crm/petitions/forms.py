"""The staff petition form; the rules themselves live in crm.petitions.service."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, RadioField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from crm.models import CONSENT_MODES


class PetitionForm(FlaskForm):
    slug = StringField("Slug (the public address /p/…)", validators=[InputRequired(), Length(max=120)])
    title = StringField("Public title", validators=[InputRequired(), Length(max=300)])
    addressed_to = StringField("Addressed to", validators=[Optional(), Length(max=300)])
    body = TextAreaField("Text (Markdown)", render_kw={"rows": 10})
    goal = IntegerField("Signature goal", default=1000,
                        validators=[InputRequired(), NumberRange(min=1, max=100_000_000)])
    thank_you_message = TextAreaField("Thank-you message", render_kw={"rows": 3})
    redirect_url = StringField("Redirect after signing (optional)",
                               validators=[Optional(), Length(max=500)])
    consent_wording = TextAreaField("Consent wording", validators=[InputRequired()],
                                    render_kw={"rows": 3})
    consent_mode = RadioField("Consent mode", default="implied", choices=[
        SelectChoice(CONSENT_MODES[0], "Implied: signing subscribes (wording shown under the button)"),
        SelectChoice(CONSENT_MODES[1], "Checkbox: only signers who tick the box are subscribed"),
    ])

    double_opt_in = BooleanField("Ask signers to confirm by email (double opt-in)")

    def data_for_service(self) -> dict:
        """The fields as save_petition expects them (empty text as "")."""
        from crm.petitions.service import FIELDS

        data = {name: getattr(self, name).data for name in FIELDS}
        return {k: ("" if v is None and k != "goal" else v) for k, v in data.items()}

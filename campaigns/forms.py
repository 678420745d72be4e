"""Campaign, template and sender identity forms; the rules themselves live in campaigns.service."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from crm.input_guard import positive_int

CODE = {"spellcheck": "false", "autocapitalize": "off", "autocomplete": "off", "class": "code"}


class CampaignForm(FlaskForm):
    name = StringField("Name (for staff)")
    subject = StringField("Subject")
    preheader = StringField("Preheader (the inbox preview line)")
    # Choices are set by the view (active identities, segments); the service checks the ids.
    sender_id = SelectField("From (sender identity)", coerce=positive_int, validate_choice=False)
    reply_to = StringField("Reply-to (optional; the identity's own reply-to if empty)")
    mjml = TextAreaField("Body (MJML)", render_kw={"rows": 24, **CODE})
    text_body = TextAreaField("Plain-text part (leave empty to generate it from the HTML)",
                              render_kw={"rows": 10, **CODE})
    segment_id = SelectField("Send to segment", coerce=positive_int, validate_choice=False)
    track_opens = BooleanField("Track opens")
    track_clicks = BooleanField("Track clicks")
    version = HiddenField()

    def data_for_service(self) -> dict:
        return {name: getattr(self, name).data for name in
                ("name", "subject", "preheader", "sender_id", "reply_to", "mjml", "text_body", "segment_id",
                 "track_opens", "track_clicks")}


class NewCampaignForm(FlaskForm):
    """The list page's "New campaign" picker (GET: it only opens the editor)."""

    class Meta:
        csrf = False

    template_id = SelectField("Start from", validate_choice=False)


class TestSendForm(FlaskForm):
    addresses = StringField("Staff addresses, comma-separated", validators=[Length(max=2000)])
    supporter_id = HiddenField()


class ScheduleForm(FlaskForm):
    send_at = StringField("Send at", render_kw={"type": "datetime-local"})


class TemplateForm(FlaskForm):
    name = StringField("Name")
    mjml = TextAreaField("MJML", render_kw={"rows": 28, **CODE})


class SenderForm(FlaskForm):
    name = StringField("Display name", validators=[Length(max=200)])
    email = StringField("From address", render_kw={"type": "email"})
    reply_to = StringField("Reply-to (optional)", validators=[Optional()], render_kw={"type": "email"})
    is_active = BooleanField("Active (offered in the campaign editor)", default=True)

    def data_for_service(self) -> dict:
        return {"name": self.name.data, "email": self.email.data, "reply_to": self.reply_to.data,
                "is_active": self.is_active.data}

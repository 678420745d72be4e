from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.fields import SelectChoice
from wtforms.validators import DataRequired, Length, Optional


class SupporterEditForm(FlaskForm):
    """The rules (lengths refused, never cut; the address's uniqueness) are crm.supporters.service's."""

    email = StringField("Email", validators=[DataRequired(), Length(max=320)])
    first_name = StringField("First name")
    last_name = StringField("Last name")
    postal_code = StringField("Postal code")
    country = SelectField("Country", validate_choice=False)  # choices: crm.countries, set by the view


class NotesForm(FlaskForm):
    notes = TextAreaField("Staff notes (never shown to the supporter)", validators=[Optional(), Length(max=20000)])


class TagForm(FlaskForm):
    name = StringField("Add tag", validators=[DataRequired(), Length(max=100)])


class ConsentChangeForm(FlaskForm):
    reason = TextAreaField("Reason (required)", validators=[DataRequired(message="Give a reason."),
                                                             Length(max=2000)])


class BulkTagForm(FlaskForm):
    tag = StringField("Tag", validators=[DataRequired(message="Enter a tag name."), Length(max=100)])
    action = RadioField("Action", choices=[SelectChoice("add", "Add to all"),
                                                  SelectChoice("remove", "Remove from all")],
                        default="add", validators=[DataRequired()])


class EraseForm(FlaskForm):
    confirm = StringField("Type ERASE to confirm", validators=[DataRequired()])

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, SelectField, StringField
from wtforms.fields import SelectChoice
from wtforms.validators import Length, Optional

from crm.imports.service import CONSENT_TREATMENTS


class UploadForm(FlaskForm):
    file = FileField("CSV or XLSX file", validators=[FileRequired("Choose a file to upload.")])


class OptionsForm(FlaskForm):
    petition_id = SelectField("Add as signatures of petition", coerce=str, default="")
    petition_wording = BooleanField("Record the petition's consent wording for opted-in rows")
    tags = StringField("Tags to add (comma-separated; created if missing)", validators=[Optional(), Length(max=500)])
    consent = SelectField("Consent", choices=[SelectChoice(k, v) for k, v in CONSENT_TREATMENTS.items()],
                          default="column")

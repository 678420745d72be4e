"""The export form: what to export, filtered how, in which format."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, RadioField, SelectField, SelectMultipleField
from wtforms.fields import SelectChoice
from wtforms.validators import DataRequired, Optional
from wtforms.widgets import CheckboxInput, ListWidget


class ExportForm(FlaskForm):
    kind = RadioField("Export", default="engagement", validators=[DataRequired()], choices=[
        SelectChoice("engagement", "Engagement: one row per message"),
        SelectChoice("summary", "Supporter summary: one row per supporter mailed")])
    format = RadioField("Format", default="csv", validators=[DataRequired()], choices=[
        SelectChoice("csv", "CSV (Excel-safe, UTF-8)"), SelectChoice("xlsx", "Excel (XLSX)"),
        SelectChoice("parquet", "Parquet (pandas, typed columns)")])
    since = DateField("Sent from (UTC, inclusive)", validators=[Optional()])
    until = DateField("Sent until (UTC, inclusive)", validators=[Optional()])
    campaigns = SelectMultipleField("Campaigns (none ticked: all)", coerce=int, validators=[Optional()],
                                    widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())
    segment = SelectField("Supporters in segment", validators=[Optional()])
    include_email = BooleanField("Include email addresses")

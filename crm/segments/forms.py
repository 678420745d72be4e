"""The segment form; the rules themselves are checked in crm.segments.rules."""

from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField
from wtforms.validators import InputRequired, Length


class SegmentForm(FlaskForm):
    name = StringField("Name", validators=[InputRequired(), Length(max=200)])
    description = TextAreaField("Description (optional)", render_kw={"rows": 2})
    # The builder keeps the rule tree here as JSON; without JavaScript it can be edited directly.
    rules = TextAreaField("Rules (JSON)", render_kw={"rows": 8, "spellcheck": "false"})


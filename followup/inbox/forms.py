"""The needs-attention queue's form: handling an item takes a note."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from followup.inbox.queue import MAX_NOTE


class HandleForm(FlaskForm):  # type: ignore[misc]
    note = TextAreaField("What was done", validators=[DataRequired(), Length(max=MAX_NOTE)])

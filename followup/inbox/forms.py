"""The needs-attention queue's form: handling an item takes a note (a held text, a decision)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from followup.inbox.queue import MAX_NOTE


class HandleForm(FlaskForm):  # type: ignore[misc]
    note = TextAreaField("What was done", validators=[DataRequired(), Length(max=MAX_NOTE)])
    # Only a held text's item has one; the service checks it (required there, refused else).
    decision = StringField("What happened to the text", validators=[Optional(), Length(max=16)])
    # A critical text's item: the version of the text the page showed (its updated_at), so
    # that a note is never taken for a problem that came after it (`_handle_text`).
    seen = StringField(validators=[Optional(), Length(max=40)])

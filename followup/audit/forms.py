"""The audit trail's filter form (GET: it changes nothing, so no CSRF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, SelectChoice, SelectField, StringField
from wtforms.validators import Length, Optional

from followup.bounds import DateInRange


class AuditFilterForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False

    actor = StringField("Who (part of an email)", validators=[Optional(), Length(max=254)])
    action = SelectField("What", choices=[SelectChoice("", "Anything")], default="")
    date_from = DateField("From", validators=[Optional(), DateInRange()])
    date_to = DateField("To", validators=[Optional(), DateInRange()])

"""The send log's filter form (GET, no CSRF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, SelectChoice, SelectField, StringField
from wtforms.validators import Length, Optional

from followup.bounds import MAX_SEARCH_LENGTH, DateInRange
from followup.messaging.models import STATUSES
from followup.sendlog.service import LogFilter


class LogFilterForm(FlaskForm):  # type: ignore[misc]
    """Filters read from the query string; a bad value is a field error, not a 500."""

    class Meta:
        csrf = False  # a GET form: it changes nothing

    status = SelectField(
        "Status",
        choices=[SelectChoice("", "Any status"), *(SelectChoice(s, s) for s in STATUSES)],
        default="",
    )
    step = SelectField("Step", choices=[SelectChoice("", "Any step")], default="")
    date_from = DateField("Due from", validators=[Optional(), DateInRange()])
    date_to = DateField("Due to", validators=[Optional(), DateInRange()])
    q = StringField(
        "Patient name or last 4 digits",
        validators=[Optional(), Length(max=MAX_SEARCH_LENGTH)],
    )
    attention = BooleanField("Only critical texts that need attention")

    def to_filter(self, critical_steps: frozenset[str]) -> LogFilter:
        """The service's filter for what the form holds."""
        return LogFilter(
            status=self.status.data or None,
            step=self.step.data or None,
            date_from=self.date_from.data,
            date_to=self.date_to.data,
            search=(self.q.data or "").strip() or None,
            needs_attention=bool(self.attention.data),
            critical_steps=critical_steps,
        )

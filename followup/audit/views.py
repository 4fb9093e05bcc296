"""The audit trail for admins: who did what to which record, when. Read-only."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from urllib.parse import urlencode

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue
from wtforms import SelectChoice

from followup.audit.forms import AuditFilterForm
from followup.audit.models import AuditEvent
from followup.audit.service import audit_actions, recent_audit_events
from followup.bounds import MAX_PAGE
from followup.care.timing import zone
from followup.web import db, runtime

bp = Blueprint("audit", __name__)


@bp.get("/audit")
def audit() -> ResponseReturnValue:
    """Admins only (see followup.web.ADMIN_PATHS)."""
    form = AuditFilterForm(request.args)
    form.action.choices = [
        SelectChoice("", "Anything"),
        *(SelectChoice(a, a) for a in audit_actions(session=db())),
    ]
    page = request.args.get("page", 1, type=int) or 1
    if not 1 <= page <= MAX_PAGE:
        abort(400, f"There is no page {str(page)[:12]}: pages run from 1 to {MAX_PAGE}.")
    events: list[AuditEvent] = []
    more = False
    valid = form.validate()
    if valid:
        tz = zone(runtime().settings.default_timezone)  # dates are the clinic's
        since = (
            datetime.combine(form.date_from.data, time(0), tzinfo=tz)
            if form.date_from.data
            else None
        )
        until = (
            datetime.combine(form.date_to.data + timedelta(days=1), time(0), tzinfo=tz)
            if form.date_to.data
            else None
        )
        events, more = recent_audit_events(
            session=db(),
            page=page,
            actor=form.actor.data or None,
            action=form.action.data or None,
            since=since,
            until=until,
        )
    query = urlencode({k: v for k, v in request.args.items() if k != "page" and v})
    return render_template(
        "audit/list.html", events=events, page=max(1, page), more=more, form=form, query=query
    ), (200 if valid else 422)

"""The audit trail for admins: who did what to which record, when."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from followup.audit.service import recent_audit_events
from followup.web import db

bp = Blueprint("audit", __name__)


@bp.get("/audit")
def audit() -> ResponseReturnValue:
    """Admins only (see followup.web.ADMIN_PATHS)."""
    page = request.args.get("page", 1, type=int) or 1
    events, more = recent_audit_events(session=db(), page=page)
    return render_template(
        "audit/list.html",
        events=events,
        page=max(1, page),
        more=more,
    )

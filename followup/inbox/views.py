"""The care team's queue at /attention (nurses and admins), and the header's counts."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from flask import Blueprint, abort, flash, redirect, render_template
from flask.typing import ResponseReturnValue
from flask_login import current_user

from followup.errors import NotFound, ValidationError
from followup.inbox.forms import HandleForm
from followup.inbox.queue import DECISIONS, attention_queue, queue_counts
from followup.inbox.service import mark_handled
from followup.web import db, runtime, staff

log = logging.getLogger(__name__)

bp = Blueprint("inbox", __name__)


@bp.get("/attention")
def attention() -> ResponseReturnValue:
    rt = runtime()
    queue = attention_queue(session=db(), critical_steps=rt.care.critical_steps())
    return render_template(
        "inbox/attention.html",
        queue=queue,
        form=HandleForm(),
        now=rt.clock.now(),
        decisions=DECISIONS,
    )


@bp.post("/attention/<kind>/<int:item_id>")
def handle(kind: str, item_id: int) -> ResponseReturnValue:
    form = HandleForm()
    if not form.validate():
        flash("Say what was done before marking an item handled.")
        return redirect(f"/attention#item-{kind}-{item_id}")
    try:
        mark_handled(
            session=db(),
            kind=kind,
            item_id=item_id,
            note=form.note.data or "",
            actor=staff().email,
            now=runtime().clock.now(),
            decision=form.decision.data or None,
            seen=form.seen.data or None,
        )
    except NotFound:
        abort(404)
    except ValidationError as exc:
        db().rollback()
        flash(f"Not marked: {exc.field} {exc.message}.")
        return redirect("/attention")
    db().commit()
    decision = DECISIONS.get(form.decision.data or "")
    flash(f"Marked handled: {kind} {item_id}" + (f" ({decision.lower()})." if decision else "."))
    return redirect("/attention")


@bp.app_context_processor
def inbox_counts() -> dict[str, Any]:
    """The header's figures on every page: open items, and urgent ones."""
    if not current_user.is_authenticated:
        return {}
    try:
        counts = queue_counts(session=db(), critical_steps=runtime().care.critical_steps())
    except sqlalchemy.exc.SQLAlchemyError as exc:  # an error page must still render
        log.warning("queue counts unavailable (%s)", type(exc).__name__)
        db().rollback()
        return {}
    return {"inbox_counts": counts}

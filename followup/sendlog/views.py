"""The admins' pages: dashboard, send log, a text's history, CSV export."""

from __future__ import annotations

from collections.abc import Iterator

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from wtforms import SelectChoice

from followup.audit.service import record_audit
from followup.care.protocol import NAMED_BY_TEXT, correction_key
from followup.care.timing import zone
from followup.errors import NotFound, ValidationError
from followup.inbox.queue import attention_queue
from followup.sendlog.chart import daily_chart
from followup.sendlog.dashboard import DailyCache, dashboard
from followup.sendlog.forms import LogFilterForm
from followup.sendlog.service import (
    check_filter,
    csv_lines,
    explain_error,
    iter_log,
    local_time,
    log_page,
    message_history,
)
from followup.web import db, runtime, staff

bp = Blueprint("sendlog", __name__)
PREVIEW_OTHERS = 10  # the dashboard lists every urgent item, and this many of the rest


def _clinic_zone() -> str:
    return runtime().settings.default_timezone


@bp.get("/")
def home() -> ResponseReturnValue:
    """Admins land on the dashboard; nurses on their patients."""
    if not staff().is_admin:
        return redirect("/patients")
    figures = dashboard(
        session=db(), now=runtime().clock.now(), tz=zone(_clinic_zone()), cache=_daily_cache()
    )
    chart = Markup(  # noqa: S704 - built from numbers and dates only, text escaped
        daily_chart(figures.days, title="Texts sent, delivered and failed per day, last 30 days")
    )
    # A preview: every urgent item (never one left out), then the oldest few others.
    queue = attention_queue(
        session=db(), critical_steps=runtime().care.critical_steps(), limit=PREVIEW_OTHERS
    )
    urgent = [item for item in queue.items if item.urgent]
    others = [item for item in queue.items if not item.urgent][:PREVIEW_OTHERS]
    return render_template(
        "sendlog/dashboard.html",
        figures=figures,
        chart=chart,
        queue=queue,
        preview=urgent + others,
        now=runtime().clock.now(),
    )


def _daily_cache() -> DailyCache:
    """This app's cache of closed days, made on first use (nothing is built at import)."""
    cache = current_app.extensions.get("followup.daily_cache")
    if cache is None:
        cache = current_app.extensions.setdefault("followup.daily_cache", DailyCache())
    return cache  # type: ignore[no-any-return]


def _filter_form() -> LogFilterForm:
    form = LogFilterForm(request.args)
    protocol_steps = [s for p in runtime().care.protocols.values() for s in p.steps]
    steps = sorted(
        {s.key for s in protocol_steps}
        | {correction_key(s.key) for s in protocol_steps if any(map(s.names, NAMED_BY_TEXT))}
    )
    form.step.choices = [SelectChoice("", "Any step"), *(SelectChoice(s, s) for s in steps)]
    return form


@bp.get("/log")
def log() -> ResponseReturnValue:
    form = _filter_form()
    page = None
    valid = form.validate()
    if valid:
        try:
            page = log_page(
                session=db(),
                log_filter=form.to_filter(runtime().care.critical_steps()),
                tz=zone(_clinic_zone()),
                cursor=request.args.get("cursor") or None,
            )
        except ValidationError as exc:
            target = getattr(form, exc.field, None)
            if target is None:
                abort(400, exc.message)
            target.errors = [*target.errors, exc.message]
            valid = False
    query = request.query_string.decode()
    csv_query = "&".join(p for p in query.split("&") if p and not p.startswith("cursor="))
    page_html = render_template("sendlog/log.html", form=form, page=page, csv_query=csv_query)
    return page_html, 200 if valid else 422


@bp.get("/log/<int:message_id>")
def history(message_id: int) -> ResponseReturnValue:
    try:
        message, patient, events = message_history(session=db(), message_id=message_id)
    except NotFound:
        abort(404)
    return render_template(
        "sendlog/history.html",
        message=message,
        patient=patient,
        events=events,
        local=local_time,
        explain=explain_error,
    )


@bp.get("/log.csv")
def export_csv() -> ResponseReturnValue:
    """Stream the filtered log as CSV; the export is audited before the first byte."""
    form = _filter_form()
    if not form.validate():
        abort(400, "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()))
    try:  # every check before the audit row: an export that is recorded then runs
        log_filter = check_filter(form.to_filter(runtime().care.critical_steps()))
    except ValidationError as exc:
        abort(400, f"{exc.field}: {exc.message}")
    record_audit(
        session=db(),
        actor=staff().email,
        action="sendlog.exported",
        now=runtime().clock.now(),
        detail=log_filter.describe(),
    )
    db().commit()
    session_factory = runtime().session_factory
    tz = zone(_clinic_zone())

    def rows() -> Iterator[str]:
        # Its own session: the request's is closed before the stream ends.
        with session_factory() as session:
            yield from csv_lines(iter_log(session=session, log_filter=log_filter, tz=tz))

    stamp = runtime().clock.now().strftime("%Y%m%d-%H%M")
    return Response(
        rows(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="followup-log-{stamp}.csv"'},
    )

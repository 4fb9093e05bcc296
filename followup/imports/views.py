"""The Import page: upload a CSV or FHIR file, follow its progress, read its report.

The upload is read here (its size limit is enforced before the body is read, through
MAX_CONTENT_LENGTH); the import itself runs in a background thread of this process, and
the page follows the import's status row in the database, refreshing itself every few
seconds (a `Refresh` header: no script) until it is done.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, redirect, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from followup.imports.csvformat import COLUMNS, template_csv
from followup.imports.fhirformat import BLOOD_THINNER_URL, TIMEZONE_URL
from followup.imports.fhirpatient import SMS_CONSENT_SYSTEM
from followup.imports.forms import ImportForm
from followup.imports.models import QUEUED, RUNNING
from followup.imports.service import (
    REPORT_PAGE,
    create_run,
    get_run,
    is_stalled,
    recent_runs,
    report_csv_lines,
    report_rows,
    start_in_background,
)
from followup.imports.source import (
    MAX_IMPORT_BYTES,
    MAX_IMPORT_ROWS,
    FileRefused,
    Upload,
    read_stream,
)
from followup.patients.bulk import ALREADY_ENROLLED, PLANNED, REFUSED
from followup.web import db, runtime, staff

bp = Blueprint("imports", __name__)

UNPROCESSABLE = 422
REFRESH_SECONDS = 2
OUTCOME_FILTERS = (REFUSED, PLANNED, "would be planned", ALREADY_ENROLLED)
THREADS = "followup_import_threads"  # app.extensions: this process's running imports


def _render_form(form: ImportForm, status: int = 200) -> ResponseReturnValue:
    return (
        render_template(
            "imports/index.html",
            form=form,
            columns=COLUMNS,
            runs=recent_runs(session=db()),
            max_megabytes=MAX_IMPORT_BYTES // 1_048_576,
            max_rows=MAX_IMPORT_ROWS,
            blood_thinner_url=BLOOD_THINNER_URL,
            timezone_url=TIMEZONE_URL,
            sms_system=SMS_CONSENT_SYSTEM,
            default_timezone=runtime().settings.default_timezone,
        ),
        status,
    )


@bp.get("/import")
def index() -> ResponseReturnValue:
    return _render_form(ImportForm())


@bp.errorhandler(RequestEntityTooLarge)
def too_large(_exc: RequestEntityTooLarge) -> ResponseReturnValue:
    if not current_user.is_authenticated:  # the Import page is for signed-in staff only
        return "Please sign in first.", 401
    form = ImportForm(formdata=None)
    form.files.errors = [
        f"is larger than {MAX_IMPORT_BYTES // 1_048_576} MB; split the file. Nothing was imported."
    ]
    return _render_form(form, 413)


@bp.post("/import")
def upload() -> ResponseReturnValue:
    form = ImportForm()
    files = [f for f in request.files.getlist(form.files.name) if f and f.filename]
    if not files:
        form.files.errors = ["is required: choose a CSV, FHIR JSON or NDJSON file"]
        return _render_form(form, UNPROCESSABLE)
    uploads: list[Upload] = []
    try:
        for file in files:
            already = sum(len(u.data) for u in uploads)
            uploads.append(read_stream(file.filename or "upload", file.stream, already=already))
    except FileRefused as exc:
        form.files.errors = [str(exc)]
        return _render_form(form, 413)
    run = create_run(
        session=db(),
        filename=", ".join(u.name for u in uploads),
        actor=staff().email,
        dry_run=bool(form.dry_run.data),
        now=runtime().clock.now(),
    )
    db().commit()
    thread = start_in_background(runtime=runtime(), run_id=run.id, uploads=uploads)
    threads = current_app.extensions.setdefault(THREADS, [])
    threads[:] = [t for t in threads if t.is_alive()] + [thread]
    return redirect(f"/import/{run.id}", code=303)


@bp.get("/import/template.csv")
def template() -> ResponseReturnValue:
    return Response(
        template_csv(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="followup-import-template.csv"'},
    )


@bp.get("/import/<int:run_id>")
def show(run_id: int) -> ResponseReturnValue:
    run = get_run(session=db(), run_id=run_id)
    outcome = request.args.get("outcome")
    outcome = outcome if outcome in OUTCOME_FILTERS else None
    after = request.args.get("after", 0, type=int) or 0
    rows = list(report_rows(session=db(), run_id=run.id, outcome=outcome, after=after))
    stalled = is_stalled(run, runtime().clock.now())
    updating = run.status in (QUEUED, RUNNING) and not stalled
    live = updating and request.args.get("updates") != "off"
    response = current_app.make_response(
        render_template(
            "imports/run.html",
            run=run,
            rows=rows,
            outcome=outcome,
            after=after,
            next_after=rows[-1].seq if len(rows) == REPORT_PAGE else None,
            stalled=stalled,
            updating=updating,
            live=live,
            refresh_seconds=REFRESH_SECONDS,
        )
    )
    if live:
        # Reload while the import runs; "Stop updating" turns it off (WCAG 2.2.1).
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


@bp.get("/import/<int:run_id>/report.csv")
def report_csv(run_id: int) -> ResponseReturnValue:
    run = get_run(session=db(), run_id=run_id)
    session_factory = runtime().session_factory

    def lines() -> Iterator[str]:
        # Its own session: the request's is closed before the stream ends.
        with session_factory() as session:
            yield from report_csv_lines(report_rows(session=session, run_id=run.id, limit=None))

    return Response(
        lines(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="followup-import-{run.id}.csv"'},
    )

"""The `followup` command: operators, demos, support and tests."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy.exc
from alembic.util import CommandError as AlembicCommandError

from followup.bounds import MAX_ID
from followup.clock import Clock, FakeClock, SystemClock
from followup.errors import ConfigurationError, NotFound, ValidationError
from followup.logsafe import describe_failure
from followup.ops.logs import configure_logging
from followup.runtime import Runtime, build_runtime
from followup.settings import Settings, load_settings

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
ID = click.IntRange(1, MAX_ID)
# --now: any instant a clinic could mean; also keeps date arithmetic far from year 9999.
EARLIEST_NOW = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_NOW = datetime(2100, 1, 1, tzinfo=UTC)

# Field names in errors use the flag a CLI user typed.
_FLAG_FOR_FIELD = {
    "date_from": "--from",
    "date_to": "--to",
    "takes_blood_thinner": "--blood-thinner / --no-blood-thinner",
}


@dataclass
class CliState:
    now: datetime | None

    def clock(self) -> Clock:
        return FakeClock(self.now) if self.now is not None else SystemClock()

    def settings(self) -> Settings:
        settings = load_settings()
        configure_logging(log_format=settings.log_format)
        return settings

    def runtime(self) -> Runtime:
        runtime = build_runtime(self.settings(), self.clock())
        # Close the database connections when the command ends, however it ends.
        click.get_current_context().call_on_close(runtime.engine.dispose)
        return runtime


def parse_now(text: str) -> datetime:
    """Parse --now: ISO 8601; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip()[:64])
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise click.BadParameter(f"{text[:64]!r} is not ISO 8601", param_hint="--now") from exc
    if not EARLIEST_NOW <= value < LATEST_NOW:
        raise click.BadParameter("must be between the years 2000 and 2099", param_hint="--now")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--now",
    "now_text",
    metavar="ISO8601",
    help="Run as if it were this instant (UTC unless an offset is given).",
)
@click.pass_context
def cli(ctx: click.Context, now_text: str | None) -> None:
    """followup: aftercare texts for kyphoplasty and vertebroplasty patients."""
    configure_logging()  # text until the settings are read (LOG_FORMAT)
    ctx.obj = CliState(now=parse_now(now_text) if now_text else None)


# --- db -----------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(state: CliState, revision: str) -> None:
    """Apply the Alembic migrations."""
    from followup.migrate import upgrade

    settings = state.settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


# --- enroll / schedule --------------------------------------------------------------------


@cli.command()
@click.option("--first-name", required=True)
@click.option("--last-name", required=True)
@click.option("--phone", required=True, help="Mobile number, national or E.164.")
@click.option("--procedure", required=True, help="kyphoplasty or vertebroplasty.")
@click.option(
    "--completed-at",
    default="",
    metavar="LOCAL",
    help="When the procedure finished; local to --timezone unless it has an offset.",
)
@click.option(
    "--scheduled-at",
    default="",
    metavar="LOCAL",
    help="Instead of --completed-at: when the procedure is booked (texts before it).",
)
@click.option("--timezone", required=True, help="The patient's IANA zone, e.g. America/New_York.")
@click.option("--language", default="en", show_default=True, help="en or es.")
@click.option("--blood-thinner", default=None, metavar="NAME", help="The blood thinner taken.")
@click.option("--no-blood-thinner", is_flag=True, help="The patient takes no blood thinner.")
@click.option(
    "--stop-blood-thinner-on",
    default=None,
    metavar="DATE",
    help="With --scheduled-at and --blood-thinner: the date the doctor gave to stop it.",
)
@click.option("--external-id", default=None, help="The clinic's id for the procedure.")
@click.option("--consent", is_flag=True, help="The patient agreed to receive texts.")
@click.pass_obj
def enroll(state: CliState, /, **options: Any) -> None:
    """Enroll a patient, before (--scheduled-at) or after (--completed-at) the procedure,
    and plan their texts."""
    from followup.messaging.transports.base import mask_phone
    from followup.patients.service import enroll_patient
    from followup.patients.validation import EnrollmentForm

    no_blood_thinner = options.pop("no_blood_thinner")
    if (options["blood_thinner"] is not None) == no_blood_thinner:
        raise ValidationError(
            "takes_blood_thinner",
            "give exactly one: --blood-thinner NAME if the patient takes one, "
            "--no-blood-thinner if not",
        )
    options["takes_blood_thinner"] = not no_blood_thinner
    runtime = state.runtime()
    form = EnrollmentForm(**options)
    now = runtime.clock.now()
    with runtime.session_factory() as session:
        result = enroll_patient(
            session=session,
            form=form,
            care=runtime.care,
            region=runtime.settings.default_region,
            now=now,
            actor="cli",
        )
        session.commit()
    booked = ", booked" if result.procedure.status == "scheduled" else ""
    click.echo(
        f"patient {result.patient.id} enrolled: procedure {result.procedure.id} "
        f"({result.procedure.kind}{booked}), texts to {mask_phone(result.patient.phone)}"
    )
    _echo_texts(result.patient.timezone, result.messages)


def _echo_texts(timezone: str, messages: Sequence[Any]) -> None:
    """Print a procedure's texts in the patient's local time."""
    from followup.care.texts import short_local
    from followup.care.timing import zone

    tz = zone(timezone)
    click.echo(f"planned texts ({timezone}):")
    for message in messages:
        click.echo(f"  {message.step:<24} {short_local(message.due_at, tz):<26} {message.status}")


def _booked_procedure(session: Any, patient_id: int, procedure_id: int | None) -> int:
    """The procedure a complete/reschedule command means: the one given, or the patient's
    only booked one."""
    import sqlalchemy as sa

    from followup.patients.models import Procedure
    from followup.patients.pages import get_patient

    get_patient(session=session, patient_id=patient_id)
    if procedure_id is not None:
        return procedure_id
    booked = session.scalars(
        sa.select(Procedure.id).where(
            Procedure.patient_id == patient_id, Procedure.status == "scheduled"
        )
    ).all()
    if len(booked) != 1:
        raise ValidationError(
            "procedure",
            f"patient {patient_id} has {len(booked)} booked procedures; name one with --procedure",
        )
    return int(booked[0])


@cli.command()
@click.argument("patient_id", type=ID)
@click.option(
    "--completed-at",
    required=True,
    metavar="LOCAL",
    help="When it finished; local to the patient's zone unless it has an offset.",
)
@click.option("--procedure", "procedure_id", type=ID, default=None, help="Which procedure.")
@click.pass_obj
def complete(state: CliState, patient_id: int, completed_at: str, procedure_id: int | None) -> None:
    """Record that a booked procedure finished: the texts after it replace those before."""
    from followup.patients.edits import complete_procedure
    from followup.patients.pages import get_patient

    runtime = state.runtime()
    with runtime.session_factory() as session:
        procedure = _booked_procedure(session, patient_id, procedure_id)
        messages = complete_procedure(
            session=session,
            patient_id=patient_id,
            procedure_id=procedure,
            completed_at=completed_at,
            care=runtime.care,
            now=runtime.clock.now(),
            actor="cli",
        )
        session.commit()
        timezone = get_patient(session=session, patient_id=patient_id).timezone
    click.echo(f"procedure {procedure} finished")
    _echo_texts(timezone, messages)


@cli.command()
@click.argument("patient_id", type=ID)
@click.option(
    "--scheduled-at",
    required=True,
    metavar="LOCAL",
    help="The new booked time; local to the patient's zone unless it has an offset.",
)
@click.option(
    "--stop-blood-thinner-on", default=None, metavar="DATE", help="A new stop date, if it moved."
)
@click.option("--procedure", "procedure_id", type=ID, default=None, help="Which procedure.")
@click.pass_obj
def reschedule(
    state: CliState,
    patient_id: int,
    scheduled_at: str,
    stop_blood_thinner_on: str | None,
    procedure_id: int | None,
) -> None:
    """Move a booked procedure and re-plan the texts before it."""
    from followup.patients.edits import reschedule_procedure
    from followup.patients.pages import get_patient

    runtime = state.runtime()
    with runtime.session_factory() as session:
        procedure = _booked_procedure(session, patient_id, procedure_id)
        messages = reschedule_procedure(
            session=session,
            patient_id=patient_id,
            procedure_id=procedure,
            scheduled_at=scheduled_at,
            stop_blood_thinner_on=stop_blood_thinner_on,
            care=runtime.care,
            now=runtime.clock.now(),
            actor="cli",
        )
        session.commit()
        timezone = get_patient(session=session, patient_id=patient_id).timezone
    click.echo(f"procedure {procedure} rescheduled")
    _echo_texts(timezone, messages)


@cli.command()
@click.argument("patient_id", type=ID)
@click.pass_obj
def schedule(state: CliState, patient_id: int) -> None:
    """Show a patient's texts in their local time."""
    from followup.care.texts import short_local
    from followup.care.timing import zone
    from followup.patients.pages import patient_schedule

    runtime = state.runtime()
    with runtime.session_factory() as session:
        patient, rows = patient_schedule(session=session, patient_id=patient_id)
    tz = zone(patient.timezone)
    state_words = "opted out" if patient.opted_out_at else "receiving texts"
    click.echo(f"patient {patient.id} ({patient.timezone}, {patient.language}, {state_words})")
    for procedure, message in rows:
        when = message.sent_at or message.due_at
        click.echo(
            f"  {message.step:<24} {short_local(when, tz):<26} {message.status:<11}"
            f" procedure {procedure.id}"
            + (f" error {message.error_code}" if message.error_code else "")
        )


# --- import -------------------------------------------------------------------------------

EXIT_SOME_REFUSED = 1


@cli.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the per-row report to this CSV file.",
)
@click.pass_obj
def import_command(
    state: CliState, files: tuple[Path, ...], dry_run: bool, report_path: Path | None
) -> None:
    """Import patients from a CSV file, or FHIR R4 files (a Bundle, or NDJSON).

    Exit 0 when every row was planned or already enrolled, 1 when some rows were refused
    (the others were imported), 2 when the file was refused (nothing was imported).
    """
    from followup.imports.service import import_items, parse_uploads, write_report_csv
    from followup.imports.source import FileRefused, Upload, read_path

    runtime = state.runtime()
    now = runtime.clock.now()
    try:
        uploads: list[Upload] = []
        for path in files:
            uploads.append(read_path(path, already=sum(len(u.data) for u in uploads)))
        parsed = parse_uploads(uploads, default_timezone=runtime.settings.default_timezone, now=now)
    except FileRefused as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    rows: list[Any] = []
    with click.progressbar(
        length=len(parsed.items),
        label="Checking" if dry_run else "Importing",
        file=sys.stderr,
        show_pos=True,
    ) as bar:

        def progress(_session: Any, chunk: list[Any]) -> None:
            rows.extend(chunk)
            bar.update(len(chunk))

        summary = import_items(
            session_factory=runtime.session_factory,
            parsed=parsed,
            care=runtime.care,
            region=runtime.settings.default_region,
            now=now,
            actor="cli",
            source=", ".join(path.name for path in files),
            dry_run=dry_run,
            on_chunk=progress,
        )
    for row in rows:
        click.echo(f"{row.ref:<14} {row.patient:<40} {row.outcome:<17} {row.detail}")
    for note in summary.notes:
        click.echo(f"note: {note}")
    click.echo(summary.describe())
    if report_path is not None:
        with open(report_path, "w", encoding="utf-8", newline="") as out:
            write_report_csv(rows, out)
        click.echo(f"report written to {report_path}")
    if summary.refused:
        sys.exit(EXIT_SOME_REFUSED)


# --- tick / log ---------------------------------------------------------------------------


@cli.command()
@click.pass_obj
def tick(state: CliState) -> None:
    """One plan + dispatch + reap pass, then staff alerts, at the clock's instant."""
    from followup.messaging.tick import run_tick

    runtime = state.runtime()
    now = runtime.clock.now()
    try:
        with runtime.session_factory() as session:
            report = run_tick(
                session=session,
                transport=runtime.transport,
                care=runtime.care,
                clock=runtime.clock,
                owner=runtime.owner,
                concurrency=runtime.settings.dispatch_concurrency,
            )
            alerts = _run_alerts(runtime, session, now)
    finally:
        runtime.engine.dispose()
    click.echo(f"tick at {now.isoformat()}")
    click.echo(str(report))
    click.echo(f"alerts: {alerts}")


def _run_alerts(runtime: Runtime, session: Any, now: datetime) -> Any:
    """Alert staff about urgent replies (and escalate), as the scheduler's job does."""
    from followup.inbox.alerts import AlertSettings, run_alerts
    from followup.inbox.mail import build_mailer

    return run_alerts(
        session=session,
        settings=AlertSettings.from_settings(runtime.settings),
        sms=runtime.transport,
        mailer=build_mailer(runtime.settings),
        now=now,
        owner=runtime.owner,
    )


@cli.command("log")
@click.option("--status", default=None, help="Only texts in this status.")
@click.option("--step", default=None, help="Only this protocol step.")
@click.option("--patient", "patient_id", type=ID, default=None, help="Only this patient.")
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Due on or after this local date.",
)
@click.option(
    "--to", "date_to", type=click.DateTime(["%Y-%m-%d"]), help="Due on or before this local date."
)
@click.option("--search", default=None, help="A patient's name or the last 4 digits of the phone.")
@click.option(
    "--needs-attention",
    is_flag=True,
    help="Only critical texts that failed, expired or were not delivered.",
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row, times in UTC.")
@click.pass_obj
def log_command(
    state: CliState,
    /,
    status: str | None,
    step: str | None,
    patient_id: int | None,
    date_from: datetime | None,
    date_to: datetime | None,
    search: str | None,
    needs_attention: bool,
    as_csv: bool,
) -> None:
    """The send log (dates are the clinic's local dates, DEFAULT_TIMEZONE)."""
    from followup.audit.service import record_audit
    from followup.care.timing import zone
    from followup.sendlog.service import LogFilter, check_filter, iter_log, write_csv

    runtime = state.runtime()
    log_filter = check_filter(
        LogFilter(
            status=status,
            step=step,
            patient_id=patient_id,
            date_from=date_from.date() if date_from else None,
            date_to=date_to.date() if date_to else None,
            search=search,
            needs_attention=needs_attention,
            critical_steps=runtime.care.critical_steps(),
        )
    )
    tz = zone(runtime.settings.default_timezone)
    with runtime.session_factory() as session:
        messages = iter_log(session=session, log_filter=log_filter, tz=tz)
        if as_csv:
            write_csv(messages, sys.stdout)
            record_audit(
                session=session,
                actor="cli",
                action="sendlog.exported",
                now=runtime.clock.now(),
                detail=log_filter.describe(),
            )
            session.commit()
            return
        click.echo(
            f"{'id':>7} {'patient':>7} {'step':<22} {'status':<11} "
            f"{'due (UTC)':<17} {'sent (UTC)':<17} error"
        )
        for m in messages:
            sent = f"{m.sent_at:%Y-%m-%d %H:%M}" if m.sent_at else "-"
            click.echo(
                f"{m.id:>7} {m.patient_id:>7} {m.step:<22} {m.status:<11} "
                f"{m.due_at:%Y-%m-%d %H:%M} {sent:<17} {m.error_code or ''}"
            )


@cli.command()
@click.option(
    "--handle",
    "item",
    metavar="KIND:ID",
    help="Mark an item handled: reply:12, text:5 or unreachable:3 (a patient's id).",
)
@click.option("--note", default="", help="What was done (required with --handle).")
@click.pass_obj
def attention(state: CliState, /, item: str | None, note: str) -> None:
    """The needs-attention queue, urgent first then oldest first, as on /attention."""
    runtime = state.runtime()
    now = runtime.clock.now()
    try:
        queue = _attention(runtime, item, note, now)
    finally:
        runtime.engine.dispose()
    if queue is None:
        return
    if not queue.items:
        click.echo("nothing needs attention")
        return
    for line in _attention_lines(queue, now, runtime.settings.default_timezone):
        click.echo(line)


def _attention(runtime: Runtime, item: str | None, note: str, now: datetime) -> Any:
    """Handle `item` (and return None), or return the queue."""
    from followup.inbox.queue import attention_queue
    from followup.inbox.service import mark_handled

    with runtime.session_factory() as session:
        if item is not None:
            kind, _, raw_id = item.partition(":")
            if not raw_id.isdigit() or len(raw_id) > 10 or not 1 <= int(raw_id) <= MAX_ID:
                raise ValidationError("handle", "must look like reply:12, text:5 or unreachable:3")
            mark_handled(
                session=session, kind=kind, item_id=int(raw_id), note=note, actor="cli", now=now
            )
            session.commit()
            click.echo(f"{kind} {raw_id} handled")
            return None
        return attention_queue(session=session, critical_steps=runtime.care.critical_steps())


def _attention_lines(queue: Any, now: datetime, clinic_zone: str) -> list[str]:
    """The queue as text: one block per item, the same fields as the web page."""
    from followup.care.texts import short_local
    from followup.care.timing import zone

    tz = zone(clinic_zone)
    lines = [f"{queue.open_count} open, {queue.urgent_count} urgent"]
    for entry in queue.items:
        flag = "URGENT " if entry.urgent else ""
        lines.append(
            f"{entry.key:<16} {flag}{entry.reason} | waiting {entry.waited(now)}"
            f" (since {short_local(entry.at, tz)})"
        )
        who = entry.patient_name or "unknown sender"
        if entry.patient_id is not None:
            who += f" (patient {entry.patient_id})"
        facts = [who, entry.phone or "-", entry.language or "-"]
        lines.append("    " + " | ".join(facts))
        if entry.words is not None:
            lines.append(f"    wrote: {entry.words!r}")
        if entry.answers:
            lines.append(f"    answers: {entry.answers}")
        if entry.answered_with:
            lines.append(f"    automatic answer: {entry.answered_with}")
        if entry.action:
            lines.append(f"    what to do: {entry.action}")
        if entry.kind == "reply":
            alerts = "; ".join(
                f"{a.describe}, {short_local(a.claimed_at, tz)}" for a in entry.alerts
            )
            lines.append(f"    alerts: {alerts or 'none sent'}")
    if queue.truncated:
        lines.append(f"(showing {len(queue.items)} of {queue.open_count})")
    return lines


# --- worker / serve -----------------------------------------------------------------------


def _startup_checks(state: CliState) -> Runtime:
    """Run `followup check`'s checks; stop here on a failure, else build the runtime."""
    from followup.ops.checks import checks_passed, run_checks
    from followup.settings import setting_values

    clock = state.clock()
    settings, checks = run_checks(values=setting_values(), now=clock.now())
    for check in checks:
        if not check.ok:
            click.echo(check.line(starting=True), err=True)
    if settings is None or not checks_passed(checks, starting=True):
        raise ConfigurationError("start-up checks failed (above); 'followup check' lists them all")
    configure_logging(log_format=settings.log_format)
    return build_runtime(settings, clock)


@cli.command()
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this worker's /metrics on this port (needs METRICS_TOKEN).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.pass_obj
def worker(state: CliState, metrics_port: int | None, metrics_host: str) -> None:
    """Run the scheduler only (plan, dispatch, reap, purge) until SIGINT or SIGTERM."""
    from followup.ops.exporter import MetricsServer
    from jobs.scheduler import build_scheduler, install_shutdown

    runtime = _startup_checks(state)
    exporter: MetricsServer | None = None
    if metrics_port is not None:
        token = runtime.settings.metrics_token
        if token is None:
            raise click.BadParameter("needs METRICS_TOKEN to be set", param_hint="--metrics-port")
        runtime.metrics.watch_database(
            session_factory=runtime.session_factory, care=runtime.care, clock=runtime.clock
        )
        try:
            exporter = MetricsServer(
                registry=runtime.metrics.registry, token=token, host=metrics_host, port=metrics_port
            ).start()
        except OSError as exc:  # the port is taken, or the address is not this host's
            raise click.BadParameter(
                f"cannot listen on {metrics_host}:{metrics_port}: {exc.strerror or exc}",
                param_hint="--metrics-port",
            ) from exc
    scheduler = build_scheduler(runtime, blocking=True)

    def stop() -> None:
        if scheduler.running:
            scheduler.shutdown(wait=True)  # start() returns once running jobs have finished
        else:
            raise SystemExit(0)  # a signal before start(): nothing is running yet

    try:
        install_shutdown(stop)
        metrics = f"; metrics on http://{metrics_host}:{exporter.port}/metrics" if exporter else ""
        click.echo(
            f"worker {runtime.owner}: transport {runtime.transport.name}{metrics}; Ctrl-C stops"
        )
        scheduler.start()
    finally:
        if exporter is not None:
            exporter.stop()
        runtime.engine.dispose()
        click.echo("worker stopped")


def _create_first_admin(runtime: Runtime) -> tuple[str, str] | None:
    """With no staff accounts yet, create an admin; return its email and one-time password."""
    from followup.accounts.service import ensure_first_admin

    with runtime.session_factory() as session:
        created = ensure_first_admin(session=session, now=runtime.clock.now())
        session.commit()
    if created is None:
        return None
    user, password = created
    return user.email, password


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Web app only: leave plan, dispatch, reap and purge to `followup worker` processes.",
)
@click.pass_obj
def serve(state: CliState, host: str, port: int, no_scheduler: bool) -> None:
    """Serve the web app and run the scheduler in one process (the embedded default)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from waitress import create_server

    from followup.app import create_app
    from jobs.scheduler import build_scheduler, install_shutdown

    runtime = _startup_checks(state)
    first_admin = _create_first_admin(runtime)
    app = create_app(runtime.settings, runtime=runtime)
    server = create_server(app, host=host, port=port)
    scheduler = (
        BackgroundScheduler(timezone="UTC")
        if no_scheduler
        else build_scheduler(runtime, blocking=False)
    )

    def stop() -> NoReturn:
        raise SystemExit(0)

    try:
        install_shutdown(stop)
        scheduler.start()
        jobs = "; no scheduler" if no_scheduler else ""
        click.echo(
            f"followup serving on http://{host}:{port}/ (transport {runtime.transport.name}{jobs})"
        )
        if first_admin is not None:
            email, password = first_admin
            click.echo(
                f"first start: sign in at http://{host}:{port}/login as {email} with the "
                f"one-time password {password}\n"
                "  (shown only this once; you will be asked to choose your own password)"
            )
        server.run()
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=True)
        server.close()
        runtime.engine.dispose()
        click.echo("followup stopped")


# --- operations ---------------------------------------------------------------------------


@cli.command()
@click.pass_obj
def check(state: CliState) -> None:
    """Check settings, database, protocols and Twilio; one line each, exit 1 on a failure."""
    from followup.ops.checks import checks_passed, run_checks
    from followup.settings import setting_values

    _settings, checks = run_checks(values=setting_values(), now=state.clock().now())
    for result in checks:
        click.echo(result.line())
    failed = sum(1 for result in checks if not result.ok)
    if not checks_passed(checks):
        click.echo(f"{failed} check(s) failed", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo("all checks passed")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.pass_obj
def purge(state: CliState, dry_run: bool) -> None:
    """Remove names, phones and text bodies of patients past RETENTION_DAYS."""
    from followup.retention.service import preview_purge, purge_expired, retention_cutoff

    runtime = state.runtime()
    now = runtime.clock.now()
    days = runtime.settings.retention_days
    cutoff = retention_cutoff(now=now, retention_days=days)
    with runtime.session_factory() as session:
        if dry_run:
            report = preview_purge(session=session, now=now, retention_days=days)
        else:
            report = purge_expired(session=session, now=now, retention_days=days, actor="cli")
    click.echo(
        f"retention {days} days: patients whose last procedure ended before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC"
    )
    click.echo(
        f"{'would remove' if dry_run else 'removed'}: {report.patients} patients, "
        f"{report.texts} texts, {report.replies} replies, "
        f"{report.unknown_replies} replies from unknown numbers"
    )
    if dry_run:
        click.echo("dry run: nothing was changed")


# --- users --------------------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Staff accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["nurse", "admin"]))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def users_create(state: CliState, email: str, role: str, password_stdin: bool) -> None:
    """Create a nurse or an admin."""
    from followup.accounts.service import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    runtime = state.runtime()
    with runtime.session_factory() as session:
        user = create_user(
            session=session,
            email=email,
            role=role,
            password=password,
            now=runtime.clock.now(),
            actor="cli",
        )
        session.commit()
    click.echo(f"user {user.id} created ({user.role})")


# --- entry point --------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    line = " ".join(message.split())  # one line, whatever the message held
    if len(line) > 300:
        line = line[:297] + "..."
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI: one line on stderr and a non-zero exit for every refusal.

    Never a traceback, and never an error's own text where it may quote data: a database
    error names its kind, code and constraint, never the statement, its parameters or
    the server's DETAIL (which quotes the refused row: a name, a phone, a text).
    """
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.exceptions.UsageError as exc:
        hint = f" ({exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        _fail(exc.format_message().replace("\n", " ") + hint, EXIT_BAD_INPUT)
    except click.exceptions.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "), EXIT_BAD_INPUT)
    except ValidationError as exc:
        flag = _FLAG_FOR_FIELD.get(exc.field, "--" + exc.field.replace("_", "-"))
        _fail(f"{flag}: {exc.message}", EXIT_BAD_INPUT)
    except NotFound as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except ConfigurationError as exc:
        _fail(f"configuration: {exc}", EXIT_FAILURE)
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        hint = (
            "; run 'followup db upgrade' first"
            if "no such table" in reason or "does not exist" in reason
            else ""
        )
        _fail(f"database: {reason}{hint}", EXIT_FAILURE)
    except sqlalchemy.exc.ProgrammingError as exc:
        missing = (
            "UndefinedTable" in type(exc.orig).__name__
            or "UndefinedColumn" in type(exc.orig).__name__
        )
        hint = "; run 'followup db upgrade' first" if missing else ""
        _fail(f"database: {describe_failure(exc)}{hint}", EXIT_FAILURE)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        # IntegrityError, DataError and the rest: the message may quote the row.
        _fail(f"database refused a change: {describe_failure(exc)}", EXIT_FAILURE)
    except AlembicCommandError as exc:
        _fail(f"db upgrade: {str(exc).splitlines()[0][:200]}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last guard: one line, no message text
        _fail(f"unexpected error: {describe_failure(exc)}", EXIT_FAILURE)


if __name__ == "__main__":
    main()

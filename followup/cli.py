"""The `followup` command: operators, demos, support and tests."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import click
import sqlalchemy.exc
from alembic.util import CommandError as AlembicCommandError

from followup.accounts.cli import users
from followup.clibase import EXIT_BAD_INPUT, EXIT_FAILURE, CliState, fail, parse_now
from followup.errors import ConfigurationError, NotFound, ValidationError
from followup.imports.cli import import_command
from followup.inbox.cli import attention
from followup.logsafe import describe_failure
from followup.ops.logs import configure_logging
from followup.patients.cli import complete, enroll, reschedule, schedule
from followup.retention.cli import purge
from followup.runtime import Runtime, build_runtime
from followup.sendlog.cli import log_command

# Field names in errors use the flag a CLI user typed.
_FLAG_FOR_FIELD = {
    "date_from": "--from",
    "date_to": "--to",
    "takes_blood_thinner": "--blood-thinner / --no-blood-thinner",
}


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


# --- tick / log ---------------------------------------------------------------------------


@cli.command()
@click.pass_obj
def tick(state: CliState) -> None:
    """One plan + dispatch + reap pass, then staff alerts, at the clock's instant."""
    from jobs import tasks

    runtime = state.runtime()
    now = runtime.clock.now()
    try:
        with runtime.session_factory() as session:
            report = tasks.tick(runtime, session, pinned=state.now is not None)
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
    from jobs.scheduler import build_jobs, install_shutdown, shut_down

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
    scheduler, loop = build_jobs(runtime, blocking=True)

    def stop() -> None:
        if scheduler.running:
            shut_down(scheduler, loop)  # start() returns once running jobs have finished
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
    """With no staff accounts yet, create an admin; return its email and one-time password.
    None if there were accounts, or another process starting at the same moment (`serve`
    replicas enabled together on a fresh database) created the admin first: that process
    shows its password, and this one starts as it would have a moment later (it exited
    on the unique e-mail)."""
    from followup.accounts.models import User
    from followup.accounts.service import ensure_first_admin

    with runtime.session_factory() as session:
        try:
            created = ensure_first_admin(session=session, now=runtime.clock.now())
            session.commit()
        except (sqlalchemy.exc.IntegrityError, ValidationError):
            # The unique e-mail refused it, or `create_user` found it in use: created
            # elsewhere since `ensure_first_admin` found no user.
            session.rollback()
            if session.scalar(sqlalchemy.select(User.id).limit(1)) is None:
                raise
            return None
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
    from jobs.scheduler import build_jobs, install_shutdown, shut_down

    runtime = _startup_checks(state)
    first_admin = _create_first_admin(runtime)
    app = create_app(runtime.settings, runtime=runtime)
    server = create_server(app, host=host, port=port)
    scheduler, loop = (
        (BackgroundScheduler(timezone="UTC"), None)
        if no_scheduler
        else build_jobs(runtime, blocking=False)
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
        shut_down(scheduler, loop)
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


# --- the domains' commands ---------------------------------------------------------------

for _command in (
    enroll,
    complete,
    reschedule,
    schedule,
    import_command,
    log_command,
    attention,
    purge,
    users,
):
    cli.add_command(_command)


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI: one line on stderr and a non-zero exit for every refusal.

    Never a traceback, and never an error's own text where it may quote data: a database
    error names its kind, code and constraint, never the statement, its parameters or
    the server's DETAIL (which quotes the refused row: a name, a phone, a text).
    """
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.UsageError as exc:
        hint = f" ({exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        fail(exc.format_message().replace("\n", " ") + hint, EXIT_BAD_INPUT)
    except click.exceptions.ClickException as exc:
        fail(exc.format_message().replace("\n", " "), EXIT_BAD_INPUT)
    except ValidationError as exc:
        flag = _FLAG_FOR_FIELD.get(exc.field, "--" + exc.field.replace("_", "-"))
        fail(f"{flag}: {exc.message}", EXIT_BAD_INPUT)
    except NotFound as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except ConfigurationError as exc:
        fail(f"configuration: {exc}", EXIT_FAILURE)
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        hint = (
            "; run 'followup db upgrade' first"
            if "no such table" in reason or "does not exist" in reason
            else ""
        )
        fail(f"database: {reason}{hint}", EXIT_FAILURE)
    except sqlalchemy.exc.ProgrammingError as exc:
        missing = (
            "UndefinedTable" in type(exc.orig).__name__
            or "UndefinedColumn" in type(exc.orig).__name__
        )
        hint = "; run 'followup db upgrade' first" if missing else ""
        fail(f"database: {describe_failure(exc)}{hint}", EXIT_FAILURE)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        # IntegrityError, DataError and the rest: the message may quote the row.
        fail(f"database refused a change: {describe_failure(exc)}", EXIT_FAILURE)
    except AlembicCommandError as exc:
        fail(f"db upgrade: {str(exc).splitlines()[0][:200]}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last guard: one line, no message text
        fail(f"unexpected error: {describe_failure(exc)}", EXIT_FAILURE)


if __name__ == "__main__":
    main()

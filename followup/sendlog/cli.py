"""`followup log`: the send log, as lines or CSV."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from followup.clibase import ID, CliState


@click.command("log")
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
    help="Only critical texts that failed, expired, were not delivered, or were cancelled "
    "by the patient's opt-out.",
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

"""The patient commands: `enroll`, `complete`, `reschedule` and `schedule`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from followup.clibase import ID, CliState
from followup.errors import ValidationError


@click.command()
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


@click.command()
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
    from followup.db import commit_with_retry
    from followup.patients.edits import complete_procedure
    from followup.patients.pages import get_patient

    runtime = state.runtime()
    with runtime.session_factory() as session:
        procedure = _booked_procedure(session, patient_id, procedure_id)
        messages = commit_with_retry(
            session,
            lambda: complete_procedure(
                session=session,
                patient_id=patient_id,
                procedure_id=procedure,
                completed_at=completed_at,
                care=runtime.care,
                now=runtime.clock.now(),
                actor="cli",
            ),
        )
        timezone = get_patient(session=session, patient_id=patient_id).timezone
    click.echo(f"procedure {procedure} finished")
    _echo_texts(timezone, messages)


@click.command()
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
    from followup.db import commit_with_retry
    from followup.patients.edits import reschedule_procedure
    from followup.patients.pages import get_patient

    runtime = state.runtime()
    with runtime.session_factory() as session:
        procedure = _booked_procedure(session, patient_id, procedure_id)
        messages = commit_with_retry(
            session,
            lambda: reschedule_procedure(
                session=session,
                patient_id=patient_id,
                procedure_id=procedure,
                scheduled_at=scheduled_at,
                stop_blood_thinner_on=stop_blood_thinner_on,
                care=runtime.care,
                now=runtime.clock.now(),
                actor="cli",
            ),
        )
        timezone = get_patient(session=session, patient_id=patient_id).timezone
    click.echo(f"procedure {procedure} rescheduled")
    _echo_texts(timezone, messages)


@click.command()
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

"""The enrollment preview: every text an enrollment would send, as staff see it before
anything is saved (times in the patient's zone, quiet-hours moves, the introduction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy.orm as so

from followup.care.planner import choose_intro
from followup.care.protocol import CareContext
from followup.care.texts import short_local
from followup.messaging.models import EXPIRED
from followup.patients.pages import local_with_clinic, step_label
from followup.patients.service import preview_enrollment, refuse_duplicates
from followup.patients.validation import Enrollment, EnrollmentForm, validate_enrollment


@dataclass(frozen=True)
class PreviewRow:
    """One text of a plan as staff see it before anything is saved."""

    step: str
    label: str
    status: str  # pending or expired
    due_local: str
    nominal_local: str
    expires_local: str
    moved_by_quiet_hours: bool
    body: str
    before_procedure: bool = False
    intro: bool = False  # the text that introduces the program


@dataclass(frozen=True)
class EnrollmentPreview:
    enrollment: Enrollment
    completed_local: str  # when it finished, or when it is booked, with the clinic's zone
    rows: list[PreviewRow]
    stop_date_local: str | None = None

    @property
    def expired_count(self) -> int:
        return sum(1 for row in self.rows if row.status == EXPIRED)


def preview_new_enrollment(
    *,
    session: so.Session,
    form: EnrollmentForm,
    care: CareContext,
    region: str,
    now: datetime,
    clinic_timezone: str | None = None,
) -> EnrollmentPreview:
    """Check an enrollment and show every text it would send, writing nothing.

    Raises InvalidEnrollment for bad fields, or ValidationError('phone') for a number that
    opted out or is already enrolled with the same completion time.
    """
    enrollment = validate_enrollment(form=form, care=care, region=region, now=now)
    refuse_duplicates(session=session, enrollment=enrollment)
    tz = enrollment.tz
    planned_texts = preview_enrollment(enrollment=enrollment, care=care, now=now)
    protocol = care.protocol(enrollment.procedure)
    intro_key, _ = choose_intro(
        protocol=protocol,
        planned=planned_texts,
        tz=tz,
        quiet_hours=care.quiet_hours,
        now=now,
    )
    rows = []
    for planned in sorted(planned_texts, key=lambda p: p.due_at):
        step = protocol.step(planned.step)
        rows.append(
            PreviewRow(
                step=planned.step,
                label=step_label(planned.step),
                status=planned.status,
                due_local=short_local(planned.due_at, tz),
                nominal_local=short_local(planned.nominal_at, tz),
                expires_local=short_local(planned.expires_at, tz),
                moved_by_quiet_hours=planned.due_at > max(planned.nominal_at, now),
                body=care.render_text(
                    kind=enrollment.procedure,
                    step_key=planned.step,
                    language=enrollment.language,
                    tz=tz,
                    completed_at=enrollment.completed_at,
                    blood_thinner=enrollment.blood_thinner,
                    scheduled_at=enrollment.scheduled_at,
                    stop_blood_thinner_on=enrollment.stop_blood_thinner_on,
                    intro=planned.step == intro_key,
                ),
                before_procedure=step.phase == "before",
                intro=planned.step == intro_key,
            )
        )
    moment = enrollment.completed_at or enrollment.scheduled_at
    assert moment is not None  # noqa: S101 - validate_enrollment requires one
    stop_on = enrollment.stop_blood_thinner_on
    return EnrollmentPreview(
        enrollment=enrollment,
        completed_local=local_with_clinic(moment, tz, clinic_timezone),
        rows=rows,
        stop_date_local=f"{stop_on:%a %Y-%m-%d}" if stop_on else None,
    )

"""Nurses' pages: enrollment with a preview of every text, search, the patient page and its edits.

Each view parses the form, calls one service function, commits and redirects; the service
raises ValidationError naming the field, which is shown next to that field.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request
from flask.typing import ResponseReturnValue
from wtforms import SelectChoice

from followup.care.timing import LocalTimeChoice
from followup.db import commit_with_retry
from followup.errors import ValidationError
from followup.inbox.service import PATIENT_FLAGS, flag_condition, patient_flags
from followup.patients.edits import (
    cancel_patient_procedure,
    change_language,
    change_phone,
    correct_completion_time,
    preview_completion_change,
    preview_reschedule,
    record_staff_opt_out,
    reschedule_procedure,
)
from followup.patients.forms import (
    COMMON_BLOOD_THINNERS,
    CancelForm,
    CompletionForm,
    EnrollForm,
    FinishedForm,
    LanguageForm,
    OptOutForm,
    PhoneForm,
    RescheduleForm,
    SearchForm,
    timezone_choices,
)
from followup.patients.pages import (
    consent_wording,
    describe_input_time,
    patient_detail,
    search_patients,
)
from followup.patients.preview import preview_new_enrollment
from followup.patients.sent import told_to_stop_blood_thinner
from followup.patients.service import enroll_patient
from followup.patients.validation import AmbiguousTime, EnrollmentForm, InvalidEnrollment
from followup.web import db, runtime, staff

bp = Blueprint("patients", __name__)

UNPROCESSABLE = 422


def _put_errors(form: Any, exc: ValidationError) -> None:
    """Show a service's ValidationError next to its field (or the form's top if unknown)."""
    errors = exc.errors if isinstance(exc, InvalidEnrollment) else {exc.field: exc.message}
    choices = exc.choices if isinstance(exc, InvalidEnrollment) else {}
    if isinstance(exc, AmbiguousTime):
        choices = {exc.field: exc.choices}
    for field_choices in choices.values():
        if "time_offset" in form:
            _offer_choices(form, field_choices)
    for field, message in errors.items():
        if field in form:
            form[field].errors = [message]
        else:
            form.form_errors.append(f"{field.replace('_', ' ')}: {message}")


@bp.get("/patients")
def index() -> ResponseReturnValue:
    form = SearchForm(formdata=request.args)
    critical = runtime().care.critical_steps()
    show = request.args.get("show") or ""
    if show not in PATIENT_FLAGS:
        show = ""
    result = search_patients(
        session=db(),
        query=form.q.data or "",
        page=request.args.get("page", 1, type=int) or 1,
        only=flag_condition(show, critical) if show else None,
    )
    flags = patient_flags(
        session=db(), patient_ids=[row.id for row in result.rows], critical_steps=critical
    )
    return render_template(
        "patients/list.html",
        form=form,
        result=result,
        flags=flags,
        show=show,
        show_choices=PATIENT_FLAGS,
    )


# --- enrollment ---------------------------------------------------------------------------


def _enroll_form() -> EnrollForm:
    settings = runtime().settings
    form = EnrollForm()
    form.timezone.choices = timezone_choices(settings.default_timezone)
    if request.method == "GET":
        form.timezone.data = settings.default_timezone
    return form


def _with_offset(raw: str, offset: str | None) -> str:
    """A typed local time with the offset the nurse picked for an ambiguous one."""
    text = raw.strip()
    if not offset or not text or len(text) > len("2026-03-07T14:30:00"):
        return text
    return text + offset


def _enrollment(form: EnrollForm) -> EnrollmentForm:
    booked = form.when.data == "booked"
    moment = _with_offset(
        (form.scheduled_at.data if booked else form.completed_at.data) or "",
        form.time_offset.data,
    )
    answer = {"yes": True, "no": False}.get(form.takes_blood_thinner.data or "")
    return EnrollmentForm(
        first_name=form.first_name.data or "",
        last_name=form.last_name.data or "",
        phone=form.phone.data or "",
        procedure=form.procedure.data or "",
        completed_at="" if booked else moment,
        scheduled_at=moment if booked else "",
        timezone=form.timezone.data or "",
        language=form.language.data or "",
        takes_blood_thinner=answer,
        blood_thinner=form.blood_thinner.data or None,
        stop_blood_thinner_on=form.stop_blood_thinner_on.data or None,
        consent=bool(form.consent.data),
    )


def _offer_choices(form: EnrollForm, choices: tuple[LocalTimeChoice, ...]) -> None:
    """Offer the two instants of an ambiguous time, each with its offset."""
    form.time_offset.choices = [
        SelectChoice(
            choice.offset,
            f"{choice.zone_name} (UTC{choice.offset}), the "
            + ("first time, before the clocks go back" if i == 0 else "second time, after"),
        )
        for i, choice in enumerate(choices)
    ]


def _render_enroll_form(form: EnrollForm, status: int = 200) -> ResponseReturnValue:
    settings = runtime().settings
    booked = form.when.data == "booked"
    typed = (form.scheduled_at.data if booked else form.completed_at.data) or ""
    return (
        render_template(
            "patients/new.html",
            form=form,
            blood_thinners=COMMON_BLOOD_THINNERS,
            consent_text=consent_wording(settings.clinic_name),
            clinic_timezone=settings.default_timezone,
            typed_time=describe_input_time(
                typed, form.timezone.data or "", clinic_timezone=settings.default_timezone
            ),
        ),
        status,
    )


@bp.route("/patients/new", methods=["GET", "POST"])
def new() -> ResponseReturnValue:
    form = _enroll_form()
    action = request.form.get("action", "preview")
    if request.method == "GET" or action == "edit":
        return _render_enroll_form(form)
    rt = runtime()
    if action == "enroll":
        try:
            result = enroll_patient(
                session=db(),
                form=_enrollment(form),
                care=rt.care,
                region=rt.settings.default_region,
                now=rt.clock.now(),
                actor=staff().email,
            )
        except ValidationError as exc:
            db().rollback()
            _put_errors(form, exc)
            return _render_enroll_form(form, UNPROCESSABLE)
        db().commit()
        later = " The texts after it are planned when you record it finished." * (
            result.procedure.status == "scheduled"
        )
        flash(f"Enrolled. {len(result.messages)} texts are planned.{later}")
        return redirect(f"/patients/{result.patient.id}")
    try:
        preview = preview_new_enrollment(
            session=db(),
            form=_enrollment(form),
            care=rt.care,
            region=rt.settings.default_region,
            now=rt.clock.now(),
            clinic_timezone=rt.settings.default_timezone,
        )
    except ValidationError as exc:
        _put_errors(form, exc)
        return _render_enroll_form(form, UNPROCESSABLE)
    return render_template(
        "patients/preview.html",
        form=form,
        preview=preview,
        consent_text=consent_wording(rt.settings.clinic_name),
    )


# --- the patient page and its edits -------------------------------------------------------


def _detail(patient_id: int, status: int = 200, **forms: Any) -> ResponseReturnValue:
    clinic_timezone = runtime().settings.default_timezone
    detail = patient_detail(
        session=db(), patient_id=patient_id, care=runtime().care, clinic_timezone=clinic_timezone
    )
    forms.setdefault("phone_form", PhoneForm(prefix="phone", formdata=None))
    forms.setdefault(
        "language_form",
        LanguageForm(prefix="language", formdata=None, language=detail.patient.language),
    )
    forms.setdefault("opt_out_form", OptOutForm(prefix="optout", formdata=None))
    time_choices = forms.pop("time_choices", [])
    completion_forms = {
        proc.id: (FinishedForm if proc.status == "scheduled" else CompletionForm)(
            prefix=f"completion{proc.id}",
            formdata=None,
            procedure_id=proc.id,
            completed_at=proc.completed_input,
        )
        for proc in detail.procedures
    }
    reschedule_forms = {
        proc.id: RescheduleForm(
            prefix=f"reschedule{proc.id}",
            formdata=None,
            procedure_id=proc.id,
            scheduled_at=proc.scheduled_input,
        )
        for proc in detail.procedures
        if proc.status == "scheduled"
    }
    cancel_forms = {
        proc.id: CancelForm(prefix=f"cancel{proc.id}", formdata=None, procedure_id=proc.id)
        for proc in detail.procedures
    }
    completion_forms.update(forms.pop("completion_forms", {}))
    reschedule_forms.update(forms.pop("reschedule_forms", {}))
    cancel_forms.update(forms.pop("cancel_forms", {}))
    every_form = [
        *forms.values(),
        *completion_forms.values(),
        *reschedule_forms.values(),
        *cancel_forms.values(),
    ]
    return (
        render_template(
            "patients/detail.html",
            detail=detail,
            completion_forms=completion_forms,
            reschedule_forms=reschedule_forms,
            cancel_forms=cancel_forms,
            time_choices=time_choices,
            clinic_timezone=clinic_timezone,
            problems=[problem for form in every_form for problem in form.form_errors],
            **forms,
        ),
        status,
    )


@bp.get("/patients/<int:patient_id>")
def detail(patient_id: int) -> ResponseReturnValue:
    return _detail(patient_id)


def _procedure_id(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() else 0


def _choices_for(
    exc: ValidationError, *, url: str, procedure_id: int, field: str, raw: str
) -> list[dict[str, Any]]:
    """Buttons for the two instants of an ambiguous time (each sends it with its offset)."""
    if not isinstance(exc, AmbiguousTime):
        return []
    return [
        {
            "url": url,
            "procedure_id": procedure_id,
            "field": field,
            "value": raw.strip() + choice.offset,
            "label": f"{raw.strip().replace('T', ' ')} {choice.zone_name} (UTC{choice.offset})",
        }
        for choice in exc.choices
    ]


@bp.post("/patients/<int:patient_id>/completion")
def completion(patient_id: int) -> ResponseReturnValue:
    """Record that a booked procedure finished, or correct a completion time (with preview)."""
    procedure_id = _procedure_id(request.form.get("procedure_id"))
    form = CompletionForm(prefix=f"completion{procedure_id}")
    form.procedure_id.data = str(procedure_id)
    raw = request.form.get("completed_at") or form.completed_at.data or ""
    rt = runtime()
    try:
        if request.form.get("action") == "confirm":
            commit_with_retry(
                db(),
                lambda: correct_completion_time(
                    session=db(),
                    patient_id=patient_id,
                    procedure_id=procedure_id,
                    completed_at=raw,
                    care=rt.care,
                    now=rt.clock.now(),
                    actor=staff().email,
                ),
            )
            flash("Completion recorded; the unsent texts are re-planned.")
            return redirect(f"/patients/{patient_id}")
        preview = preview_completion_change(
            session=db(),
            patient_id=patient_id,
            procedure_id=procedure_id,
            completed_at=raw,
            care=rt.care,
            now=rt.clock.now(),
            clinic_timezone=rt.settings.default_timezone,
        )
    except ValidationError as exc:
        db().rollback()
        form.completed_at.data = raw
        _put_errors(form, exc)
        return _detail(
            patient_id,
            UNPROCESSABLE,
            completion_forms={procedure_id: form},
            time_choices=_choices_for(
                exc,
                url=f"/patients/{patient_id}/completion",
                procedure_id=procedure_id,
                field="completed_at",
                raw=raw,
            ),
        )
    return render_template("patients/completion.html", patient_id=patient_id, preview=preview)


@bp.post("/patients/<int:patient_id>/reschedule")
def reschedule(patient_id: int) -> ResponseReturnValue:
    """Move a booked procedure (with preview): its texts before it are re-planned."""
    procedure_id = _procedure_id(request.form.get("procedure_id"))
    form = RescheduleForm(prefix=f"reschedule{procedure_id}")
    form.procedure_id.data = str(procedure_id)
    raw = request.form.get("scheduled_at") or form.scheduled_at.data or ""
    stop = request.form.get("stop_blood_thinner_on") or form.stop_blood_thinner_on.data or None
    rt = runtime()
    try:
        if request.form.get("action") == "confirm":
            commit_with_retry(
                db(),
                lambda: reschedule_procedure(
                    session=db(),
                    patient_id=patient_id,
                    procedure_id=procedure_id,
                    scheduled_at=raw,
                    stop_blood_thinner_on=stop,
                    care=rt.care,
                    now=rt.clock.now(),
                    actor=staff().email,
                ),
            )
            flash("Procedure rescheduled; the texts before it are re-planned.")
            return redirect(f"/patients/{patient_id}")
        preview = preview_reschedule(
            session=db(),
            patient_id=patient_id,
            procedure_id=procedure_id,
            scheduled_at=raw,
            stop_blood_thinner_on=stop,
            care=rt.care,
            now=rt.clock.now(),
            clinic_timezone=rt.settings.default_timezone,
        )
    except ValidationError as exc:
        db().rollback()
        form.scheduled_at.data = raw
        form.stop_blood_thinner_on.data = stop
        _put_errors(form, exc)
        return _detail(
            patient_id,
            UNPROCESSABLE,
            reschedule_forms={procedure_id: form},
            time_choices=_choices_for(
                exc,
                url=f"/patients/{patient_id}/reschedule",
                procedure_id=procedure_id,
                field="scheduled_at",
                raw=raw,
            ),
        )
    return render_template("patients/completion.html", patient_id=patient_id, preview=preview)


@bp.post("/patients/<int:patient_id>/cancel")
def cancel(patient_id: int) -> ResponseReturnValue:
    procedure_id = _procedure_id(request.form.get("procedure_id"))
    form = CancelForm(prefix=f"cancel{procedure_id}")
    form.procedure_id.data = str(procedure_id)
    try:
        if not form.confirm.data:
            raise ValidationError("confirm", "tick the box to confirm")
        count = commit_with_retry(
            db(),
            lambda: cancel_patient_procedure(
                session=db(),
                patient_id=patient_id,
                procedure_id=procedure_id,
                now=runtime().clock.now(),
                actor=staff().email,
            ),
        )
    except ValidationError as exc:
        db().rollback()
        _put_errors(form, exc)
        return _detail(patient_id, UNPROCESSABLE, cancel_forms={procedure_id: form})
    flash(f"Procedure cancelled; {count} pending texts cancelled.")
    warning = told_to_stop_blood_thinner(
        session=db(), procedure_id=procedure_id, care=runtime().care
    )
    if warning is not None:
        flash(warning)
    return redirect(f"/patients/{patient_id}")


@bp.post("/patients/<int:patient_id>/phone")
def phone(patient_id: int) -> ResponseReturnValue:
    form = PhoneForm(prefix="phone")
    rt = runtime()
    try:
        commit_with_retry(
            db(),
            lambda: change_phone(
                session=db(),
                patient_id=patient_id,
                phone=form.phone.data or "",
                region=rt.settings.default_region,
                now=rt.clock.now(),
                actor=staff().email,
            ),
        )
    except ValidationError as exc:
        db().rollback()
        _put_errors(form, exc)
        return _detail(patient_id, UNPROCESSABLE, phone_form=form)
    flash("Phone number changed; the next text goes to the new number.")
    return redirect(f"/patients/{patient_id}")


@bp.post("/patients/<int:patient_id>/language")
def language(patient_id: int) -> ResponseReturnValue:
    form = LanguageForm(prefix="language")
    try:
        commit_with_retry(
            db(),
            lambda: change_language(
                session=db(),
                patient_id=patient_id,
                language=form.language.data or "",
                now=runtime().clock.now(),
                actor=staff().email,
            ),
        )
    except ValidationError as exc:
        db().rollback()
        _put_errors(form, exc)
        return _detail(patient_id, UNPROCESSABLE, language_form=form)
    flash("Language changed; the next text is written in it.")
    return redirect(f"/patients/{patient_id}")


@bp.post("/patients/<int:patient_id>/opt-out")
def opt_out(patient_id: int) -> ResponseReturnValue:
    form = OptOutForm(prefix="optout")
    try:
        if not form.confirm.data:
            raise ValidationError("confirm", "tick the box to confirm")
        count = commit_with_retry(
            db(),
            lambda: record_staff_opt_out(
                session=db(), patient_id=patient_id, now=runtime().clock.now(), actor=staff().email
            ),
        )
    except ValidationError as exc:
        db().rollback()
        _put_errors(form, exc)
        return _detail(patient_id, UNPROCESSABLE, opt_out_form=form)
    flash(f"Opt-out recorded; {count} pending texts cancelled.")
    return redirect(f"/patients/{patient_id}")

"""Re-planning: a procedure's unsent texts follow a change of its status, times or details
(a corrected completion time, a reschedule, a finished booked procedure).

What is still unsent may move or be cancelled: a pending text, one claimed by a dispatcher
but not handed over, one waiting for its retry. The procedure's texts are locked first, so
a dispatcher can neither claim nor hand one over while they are decided and written. The
text that introduces the program moves when its own text can no longer carry it
(`lost_intros.py`); what a text's history says of its requests is read here too.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy.orm as so

from followup.care.planner import PlannedText, choose_intro
from followup.care.protocol import BEFORE, CareContext, correction_key, is_correction, step_key
from followup.care.timing import zone
from followup.messaging.corrections import correction_plan, held, still_to_go
from followup.messaging.events import (
    add_events,
    event_row,
)
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    PENDING,
    SENDING,
    Message,
)
from followup.messaging.outbox import (
    phase_plan,
)
from followup.messaging.text_state import (
    claimed_only,
    outcome_open,
    procedure_messages,
    replannable,
    request_facts,
    unsent_retry,
)
from followup.patients.models import Patient, Procedure


@dataclass(frozen=True)
class ProcedureTimes:
    """What re-planning reads of a procedure: a Procedure, or the change a nurse previews."""

    status: str
    completed_at: datetime | None
    scheduled_at: datetime | None
    stop_blood_thinner_on: date | None
    blood_thinner: str | None

    @classmethod
    def of(cls, procedure: Procedure) -> ProcedureTimes:
        return cls(
            status=procedure.status,
            completed_at=procedure.completed_at,
            scheduled_at=procedure.scheduled_at,
            stop_blood_thinner_on=procedure.stop_blood_thinner_on,
            blood_thinner=procedure.blood_thinner,
        )


@dataclass(frozen=True)
class ReplanDecision:
    """What re-planning does to one step: "plan" it (new or moved), "cancel" it, "keep" it,
    "retime" it (handed over, outcome unknown: new times, same status), "close" it (a
    text before the procedure, handed over, outcome unknown, when the procedure is finished:
    its window closes now, so it is never sent again), "resend" it (a text before the
    procedure that reached the provider naming the booked time or stop date a reschedule
    moved: corrected at once with the new one, by its step's row or, when the step's
    usual text still goes too, by a correction's, `corrections.py`), or "renew" it (that
    sent text's row, planned again at its usual time for the new date)."""

    step: str
    action: str
    planned: PlannedText | None = None
    reason: str | None = None


def decide_replan(
    *,
    times: ProcedureTimes,
    existing: dict[str, Message],
    care: CareContext,
    kind: str,
    tz: ZoneInfo,
    now: datetime,
    intro_step: str | None = None,
    maybe_reached: Collection[str] = (),
    refused: Collection[str] = (),
    moved: Collection[str] = (),
) -> tuple[list[ReplanDecision], str | None, bool]:
    """Decide, writing nothing, how a procedure's texts follow its status and times.

    `intro_step` is the text chosen to introduce the program (HELP, STOP, the rates);
    `maybe_reached` the steps closed (cancelled, expired) whose last request's outcome came
    back unknown after their closing: the patient may have them. `moved`: the anchors a
    reschedule changed ("scheduled", "stop"); a text before the procedure the provider took
    that names one of them is corrected at once with the new value, and its step's usual
    text still goes at its time unless that is soon after (`corrections.py`). Returns the
    decisions in protocol order (a step's correction beside it), the step that should
    introduce the program, and whether that choice is to be written (False while the text
    chosen before carries it).
    """
    protocol = care.protocol(kind)
    planned = phase_plan(protocol=protocol, row=times, tz=tz, care=care, now=now)
    finished = times.status == "completed"
    # A text before the procedure whose request's outcome is unknown once it is finished:
    # if it did not reach the patient it must not go out after the procedure, so it does
    # not count as having introduced the program (the intro may come twice, never not at
    # all: it carries HELP, STOP and the rates).
    phases = {step.key: step.phase for step in protocol.steps}
    closing = {
        key
        for key, message in existing.items()
        if finished and phases.get(step_key(key)) == BEFORE and outcome_open(message)
    }
    # Texts before the procedure that will not go out after it (cancelled or closed here)
    # never carried the introduction to the patient (or may not have).
    dropped = closing | {
        key
        for key, message in existing.items()
        if finished
        and phases.get(step_key(key)) == BEFORE
        and (message.status == PENDING or claimed_only(message))
    }

    fate = {p.step: p.status for p in planned}  # each step's window after the change

    def carries_intro(key: str, message: Message) -> bool:
        """The intro reached the patient with this text, may have, or goes with its retry."""
        if key in dropped:
            return False
        if message.provider_sid is not None or key in maybe_reached:
            return True
        # Under way, or handed over and back in the queue (refused for now, or requeued by
        # the reaper): it carries the intro only if it can still go out after the change.
        still_open = fate.get(key) == PENDING
        if outcome_open(message):
            return still_open
        if message.attempts > 0 and unsent_retry(message):
            # One refused for now never reached Twilio: once closed, nothing carries it.
            return still_open or key not in refused
        return False

    if intro_step is not None:
        carrier = existing.get(intro_step)
        intro_given = carrier is not None and carries_intro(intro_step, carrier)
    else:  # texts planned before the intro was recorded: any text handed over counts
        intro_given = any(m.attempts > 0 for key, m in existing.items() if key not in dropped)
    intro_key: str | None = None
    revive: set[str] = set()
    if not intro_given:
        # Only texts that can still be (re)planned count as the patient's first text, and
        # those refused for now (never at the provider) that go with their retry: the
        # intro is rendered at each hand-over, so a retry can carry it (else, when only
        # retries are left, nothing would). Never a retry a request of which may be at the
        # provider (not in `refused`): the patient may have it without the intro, and once
        # closed it would still count as having carried it (`carries_intro`).
        open_plan = [
            p
            for p in planned
            if p.step not in existing
            or (
                (replannable(existing[p.step]) and existing[p.step].attempts == 0)
                or (unsent_retry(existing[p.step]) and p.step in refused)
            )
        ]
        intro_key, welcome = choose_intro(
            protocol=protocol, planned=open_plan, tz=tz, quiet_hours=care.quiet_hours, now=now
        )
        if welcome is not None:
            planned = [welcome, *planned]
            revive.add(welcome.step)  # a welcome cancelled at completion comes back
    wanted = {p.step: p for p in planned}
    decisions = []
    for step in protocol.steps:
        message = existing.get(step.key)
        planned_text = wanted.get(step.key)
        correction = existing.get(correction_key(step.key))
        # A correction handed over, its outcome unknown, carries the values of the move
        # before: it may reach the patient, and its row cannot be planned again meanwhile.
        in_flight = correction is not None and outcome_open(correction)
        # So does the step's text handed over before the move (re-timed, it goes again
        # only if it did not reach the patient).
        step_in_flight = message is not None and outcome_open(message)
        if (
            planned_text is not None
            and planned_text.status == PENDING
            and not finished
            and step.phase == BEFORE
            and not (in_flight and step_in_flight)
            and any(step.names(anchor) for anchor in moved)
            # A correction of any status: one exists only for a text the patient had (or
            # may have had) with a date since moved; one that failed, expired or was
            # cancelled (an opt-out) left them with it.
            and (held(message) or correction is not None or step_in_flight)
        ):
            # The patient has it with the old date or time (the stop date they were texted
            # is the only one they know), or a correction is still to go: corrected at
            # once, so that they do not act on the old date first (stop warfarin on it,
            # come in on the old day); the step's text still goes at its usual time for
            # the new date, unless that is soon after (corrections.py).
            reason = "sent with the old " + (
                "stop date" if "stop" in moved and step.names("stop") else "booked time"
            )
            fix, both = correction_plan(
                planned=planned_text, key=correction_key(step.key), now=now, tz=tz,
                quiet_hours=care.quiet_hours,
            )  # fmt: skip
            if step_in_flight:
                # Corrected at once; the step's text, if it did not reach the patient, goes
                # at its new time, or not at all when that is soon after the correction.
                decisions.append(
                    ReplanDecision(fix.step, "plan" if still_to_go(correction) else "resend",
                                   planned=fix, reason=reason)
                )  # fmt: skip
                decisions.append(
                    ReplanDecision(step.key, "retime", planned=planned_text)
                    if both
                    else ReplanDecision(step.key, "close", reason="its correction goes at once")
                )
                continue
            if both and not in_flight:
                decisions.append(
                    ReplanDecision(fix.step, "plan" if still_to_go(correction) else "resend",
                                   planned=fix, reason=reason)
                )  # fmt: skip
                if held(message):
                    decisions.append(
                        ReplanDecision(step.key, "renew", planned=planned_text, reason=reason)
                    )
                    continue
            else:  # one text, at once: the step's own
                planned_text = replace(fix, step=step.key)
                if in_flight:  # the step's text goes at once; the correction never again
                    again = "corrected again by its step's text"
                    decisions.append(ReplanDecision(fix.step, "close", reason=again))
                elif still_to_go(correction):
                    decisions.append(
                        ReplanDecision(fix.step, "cancel", reason="its step's text goes at once")
                    )
                if held(message):
                    decisions.append(
                        ReplanDecision(step.key, "resend", planned=planned_text, reason=reason)
                    )
                    continue
        if planned_text is None:
            if message is not None and (message.status == PENDING or claimed_only(message)):
                reason = (
                    "procedure finished"
                    if finished and step.phase == BEFORE
                    else "step no longer applies"
                )
                decisions.append(ReplanDecision(step.key, "cancel", reason=reason))
            elif message is not None and step.key in closing:
                decisions.append(ReplanDecision(step.key, "close", reason="procedure finished"))
            elif message is not None:
                decisions.append(ReplanDecision(step.key, "keep", reason=message.status))
            continue
        if message is not None and outcome_open(message):
            decisions.append(ReplanDecision(step.key, "retime", planned=planned_text))
            continue
        # The welcome chosen as the intro comes back if closed without reaching the
        # patient (cancelled at completion or by an opt-out, expired after Twilio did not
        # have it); never one Twilio took or may have.
        revived = (
            step.key in revive
            and message is not None
            and message.status in (CANCELLED, EXPIRED)
            and message.provider_sid is None
            and step.key not in maybe_reached
        )
        if (
            message is not None
            and not revived
            and (
                (message.attempts > 0 and not unsent_retry(message))
                or not replannable(message)
                # Expired and still past its window: it keeps the times it missed.
                or (message.status == EXPIRED and planned_text.status == EXPIRED)
            )
        ):
            decisions.append(ReplanDecision(step.key, "keep", reason=message.status))
            continue
        decisions.append(ReplanDecision(step.key, "plan", planned=planned_text))
    decisions.extend(_corrections_left(existing, decisions, wanted, finished))
    order = {step.key: index for index, step in enumerate(protocol.steps)}
    decisions.sort(key=lambda d: order.get(step_key(d.step), len(order)))
    return decisions, intro_key, not intro_given


def _corrections_left(
    existing: dict[str, Message],
    decisions: list[ReplanDecision],
    wanted: dict[str, PlannedText],
    finished: bool,
) -> list[ReplanDecision]:
    """The corrections no move decided: one still to go keeps its time (it goes at once
    after the move that made it) unless its step's text no longer goes (the procedure
    finished, the step no longer applies): then it is cancelled, or its window closed if
    handed over (as its step's text). One still to go is cancelled too when its step's
    window for the times now has passed (a move back to the date the patient was texted,
    before the correction went out): it would go after that window, naming a stop date
    passed or repeating the text the patient has."""
    decided = {d.step for d in decisions}
    left = []
    for key, message in existing.items():
        if not is_correction(key) or key in decided:
            continue
        usual = wanted.get(step_key(key))
        if finished or usual is None:
            reason = "procedure finished" if finished else "step no longer applies"
            if still_to_go(message):
                left.append(ReplanDecision(key, "cancel", reason=reason))
                continue
            if finished and outcome_open(message):
                left.append(ReplanDecision(key, "close", reason=reason))
                continue
        elif usual.status != PENDING and still_to_go(message):
            # Staff call: the patient may hold a date since moved (the undo of a move
            # back to the date they were texted is the one case where they need not).
            late = "its step's window has passed: call the patient, who may hold an old date"
            left.append(ReplanDecision(key, "cancel", reason=late))
            continue
        left.append(ReplanDecision(key, "keep", reason=message.status))
    return left


def replan_procedure(
    *,
    session: so.Session,
    procedure: Procedure,
    patient: Patient,
    care: CareContext,
    now: datetime,
    moved: Collection[str] = (),
) -> list[Message]:
    """Bring a procedure's unsent texts in line with its current status, times and details.

    A booked procedure keeps the welcome and the steps before it; a completed one the steps
    after it: what is left of the steps before it is cancelled ("procedure finished").
    Texts the provider accepted (or may have), and texts cancelled on purpose, are left alone,
    but for those before the procedure naming a booked time or stop date a reschedule moved
    (`moved`): they go again with the new one. One refused for now (a transient error,
    waiting for its retry) follows the new times.
    Returns the procedure's texts after the change, in due order.
    """
    existing = procedure_messages(session=session, procedure_id=procedure.id, lock=True)
    if procedure.status not in ("completed", "scheduled"):
        return sorted(existing.values(), key=lambda m: m.due_at)
    if procedure.status == "completed" and procedure.completed_at is None:
        return sorted(existing.values(), key=lambda m: m.due_at)
    receiving = patient.can_receive_texts()
    maybe_reached, refused = request_facts(session, existing)
    decisions, intro_key, write_intro = decide_replan(
        times=ProcedureTimes.of(procedure),
        existing=existing,
        care=care,
        kind=procedure.kind,
        tz=zone(patient.timezone),
        now=now,
        intro_step=procedure.intro_step,
        maybe_reached=maybe_reached,
        refused=refused,
        moved=moved,
    )
    if write_intro and intro_key is not None:
        # With no text left to carry it, the intro's text stays as chosen (not carried): a
        # later re-plan (the procedure finished, a correction) chooses again. None would
        # read as "texts planned before the intro was recorded" (any hand-over counts).
        procedure.intro_step = intro_key
    events: list[dict[str, Any]] = []
    for decision in decisions:
        message = existing.get(decision.step)
        if decision.action == "cancel" and message is not None:
            message.status = CANCELLED
            message.lease_owner = message.lease_expires_at = None
            message.updated_at = now
            session.flush()
            events.append(event_row(message.id, now, "cancelled", CANCELLED, decision.reason))
            continue
        if decision.action in ("close", "retime") and message is not None:
            # Handed over, outcome unknown: same status, new times, or its window closed.
            if decision.planned is not None:
                if (message.due_at, message.expires_at) == (
                    decision.planned.due_at,
                    decision.planned.expires_at,
                ):
                    continue  # already so: nothing to write
                message.due_at = decision.planned.due_at
                message.expires_at = decision.planned.expires_at
                detail = (
                    "re-timed: if it did not reach the patient, it goes at the new time"
                    if decision.planned.status == PENDING
                    else "re-timed: its window has passed; if it did not reach the patient, "
                    "it is not sent again"
                )
            elif message.expires_at > now:
                message.expires_at = now
                detail = f"{decision.reason}: if it did not reach the patient, it is not sent"
            else:
                continue  # closed by an earlier change
            message.updated_at = now
            session.flush()
            events.append(
                event_row(
                    message.id, now, "replanned", SENDING,
                    f"{detail} (its hand-over's outcome is unknown)",
                )
            )  # fmt: skip
            continue
        if decision.action in ("resend", "renew") and decision.planned is not None:
            # Also for a patient opted out now: the dispatcher cancels it for the opt-out,
            # and START brings it back, as any text the opt-out kept from them.
            if message is None:  # a correction's first
                message = Message(
                    procedure_id=procedure.id, patient_id=patient.id, step=decision.step,
                    attempts=0, created_at=now,
                )  # fmt: skip
                session.add(message)
                existing[decision.step] = message
            _resend(session, message, decision, now, events)
            continue
        if decision.action != "plan" or decision.planned is None or not receiving:
            continue
        planned_text = decision.planned
        if message is None:
            message = Message(
                procedure_id=procedure.id,
                patient_id=patient.id,
                step=decision.step,
                attempts=0,
                created_at=now,
            )
            session.add(message)
        # A retry keeps its backoff (and the provider's Retry-After) if that ends later.
        backoff = message.not_before if message.attempts else None
        not_before = backoff if backoff is not None and backoff > planned_text.due_at else None
        if message.id is not None and (
            message.due_at, message.expires_at, message.status, message.not_before,
            message.lease_owner,
        ) == (planned_text.due_at, planned_text.expires_at, planned_text.status, not_before,
              None):  # fmt: skip
            continue  # already so (brought back by START just before): nothing to write
        message.due_at = planned_text.due_at
        message.expires_at = planned_text.expires_at
        message.status = planned_text.status
        message.not_before = not_before
        message.lease_owner = message.lease_expires_at = None
        message.updated_at = now
        session.flush()
        detail = "re-planned" + (": window has passed" if planned_text.status == EXPIRED else "")
        events.append(event_row(message.id, now, "replanned", planned_text.status, detail))
        existing[decision.step] = message
    # A patient who cannot receive texts (opted out, no consent) gets nothing new planned:
    # what is left is planned when they can (START plans a procedure not planned yet).
    procedure.planned_at = now if receiving else None
    add_events(session, events)
    return sorted(existing.values(), key=lambda m: m.due_at)


def _resend(
    session: so.Session,
    message: Message,
    decision: ReplanDecision,
    now: datetime,
    events: list[dict[str, Any]],
) -> None:
    """A text planned again as a new one: the correction of one the provider took (a
    reschedule moved what it names), or its step's usual text for the new date ("renew").
    A copy at the provider is in its history (the "sent" event with its SID); a late
    report about that copy finds no text and is dropped, and the reaper, asking about the
    new request, looks only at copies created since it (with other words, too)."""
    assert decision.planned is not None  # noqa: S101 - resend and renew plan a text
    old_sid = message.provider_sid
    message.status = decision.planned.status
    message.due_at, message.expires_at = decision.planned.due_at, decision.planned.expires_at
    message.attempts = 0
    message.not_before = message.handed_at = message.claimed_at = None
    message.lease_owner = message.lease_expires_at = None
    message.provider_sid = message.sent_at = message.delivered_at = None
    message.body = message.to_phone = None
    message.segments = None
    message.error_code = message.error_message = None
    message.updated_at = now
    session.flush()  # a correction's first: its id, for its history
    was = f" (sid {old_sid})" if old_sid else ""
    detail = f"{decision.reason}{was}: " + (
        "planned again at its time before the new date (corrected at once)"
        if decision.action == "renew"
        else "a correction, with the new one"
        if is_correction(decision.step)
        else "planned again with the new one"
    )
    events.append(event_row(message.id, now, "replanned", message.status, detail[:500]))

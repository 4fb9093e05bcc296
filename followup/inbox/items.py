"""The needs-attention queue's items as a person reads them: the rows behind each kind
(held texts, patients who cannot receive texts), the patient's name, phone and language,
a reply's alerts and the text it answers, each item's reason in words. What is open is
decided in queue.py (its conditions and counts); `attention_queue` there builds the page
from these.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.texts import short_local
from followup.care.timing import zone
from followup.db import UTCDateTime
from followup.inbox.models import (
    StaffAlert,
)
from followup.inbox.queue import (
    CANNOT_RECEIVE,
    FAILURE_STATUSES,
    LANGUAGE_NAMES,
    REPLY,
    TEXT,
    UNKNOWN,
    UNREACHABLE,
    AlertView,
    CriticalProblem,
    InboxItem,
    held_filter,
    unreachable_covered,
)
from followup.messaging.models import (
    CANCELLED,
    TRIAGE_URGENT,
    InboundMessage,
    Message,
    MessageEvent,
)
from followup.patients.models import Patient, Procedure


@dataclass(frozen=True)
class HeldRow:
    message_id: int
    patient_id: int
    step: str
    handed_at: datetime
    expires_at: datetime
    held_at: datetime  # when the reaper held it (its `held` event), else its last change
    opted_out: bool
    procedure_cancelled: bool


def held_rows(session: so.Session, *, limit: int) -> list[HeldRow]:
    """Texts held for a person, the longest held first."""
    held_event = (
        sa.select(sa.func.max(MessageEvent.at))
        .where(MessageEvent.message_id == Message.id, MessageEvent.kind == "held")
        .scalar_subquery()
    )
    held_at = sa.func.coalesce(held_event, Message.updated_at, type_=UTCDateTime())
    rows = session.execute(
        sa.select(
            Message.id,
            Message.patient_id,
            Message.step,
            Message.handed_at,
            Message.expires_at,
            held_at,
            Patient.opted_out_at.is_not(None),
            Procedure.status == "cancelled",
        )
        .join(Patient, Patient.id == Message.patient_id)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .where(held_filter())
        .order_by(held_at, Message.id)
        .limit(limit)
    ).all()
    return [
        HeldRow(r[0], r[1], r[2], r[3] or r[5], r[4], r[5], bool(r[6]), bool(r[7])) for r in rows
    ]


def unreachable_rows(
    session: so.Session, *, limit: int
) -> list[tuple[int, int, datetime, int, str | None]]:
    """Per patient with open cannot-receive failures: (patient, first failure id, its time,
    how many failed, its error code), oldest first."""
    failures = (
        sa.select(
            Message.patient_id,
            sa.func.min(Message.id).label("first_id"),
            sa.func.count().label("failed"),
        )
        .where(
            Message.status.in_(FAILURE_STATUSES),
            Message.error_code.in_(sorted(CANNOT_RECEIVE)),
            ~unreachable_covered(),
        )
        .group_by(Message.patient_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(
            failures.c.patient_id,
            failures.c.first_id,
            Message.updated_at,
            failures.c.failed,
            Message.error_code,
        )
        .join(Message, Message.id == failures.c.first_id)
        .order_by(Message.updated_at, failures.c.patient_id)
        .limit(limit)
    ).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


@dataclass(frozen=True)
class PatientFacts:
    name: str
    phone: str
    language: str
    timezone: str


def patient_facts(session: so.Session, ids: Iterable[int]) -> dict[int, PatientFacts]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(
            Patient.id,
            Patient.first_name,
            Patient.last_name,
            Patient.phone,
            Patient.language,
            Patient.timezone,
        ).where(Patient.id.in_(wanted))
    ).all()
    return {
        r[0]: PatientFacts(f"{r[1]} {r[2]}", r[3], LANGUAGE_NAMES.get(r[4], r[4]), r[5])
        for r in rows
    }


def alerts_by_reply(session: so.Session, ids: Sequence[int]) -> dict[int, list[AlertView]]:
    found: dict[int, list[AlertView]] = defaultdict(list)
    if not ids:
        return found
    for alert in session.scalars(
        sa.select(StaffAlert)
        .where(StaffAlert.inbound_message_id.in_(sorted(set(ids))))
        .order_by(StaffAlert.claimed_at, StaffAlert.id)
    ):
        found[alert.inbound_message_id].append(alert_view(alert))
    return found


def alert_view(alert: StaffAlert) -> AlertView:
    return AlertView(
        round=alert.round,
        channel=alert.channel,
        role=alert.role,
        recipient=alert.recipient,
        status=alert.status,
        claimed_at=alert.claimed_at,
        sent_at=alert.sent_at,
        error=alert.error,
    )


def answered_texts(session: so.Session, ids: Iterable[int | None]) -> dict[int, str]:
    from followup.patients.pages import step_label

    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(Message.id, Message.step, Message.sent_at, Patient.timezone)
        .join(Patient, Patient.id == Message.patient_id)
        .where(Message.id.in_(wanted))
    ).all()
    return {
        r[0]: f"{step_label(r[1])}, sent {short_local(r[2], zone(r[3]))}" if r[2] else r[1]
        for r in rows
    }


ANSWER_WORDS = {
    "urgent": "urgent: call the clinic now, or the emergency number",
    "reading": "a nurse will read it (with the clinic's hours)",
    "pain": "thanked for the pain score, with what to watch for",
    "help": "the clinic's name and phone (HELP)",
    "opt-out": "confirmed the opt-out",
}


def reply_reason(reply: InboundMessage) -> str:
    reason = reply.triage_reason
    if not reason:  # replies stored before triage had words
        if reply.pain_score is not None:
            reason = f"pain score {reply.pain_score} of 10"
        else:
            reason = f"reply needs reading ({reply.kind})"
    if reply.patient_id is None:
        return f"reply from an unknown number: {reason}"
    return reason


def reply_item(
    reply: InboundMessage,
    patients: dict[int, PatientFacts],
    alerts: dict[int, list[AlertView]],
    answered: dict[int, str],
) -> InboxItem:
    facts = patients.get(reply.patient_id) if reply.patient_id is not None else None
    return InboxItem(
        kind=REPLY,
        item_id=reply.id,
        urgent=reply.triage == TRIAGE_URGENT,
        at=reply.received_at,
        reason=reply_reason(reply),
        patient_id=reply.patient_id,
        patient_name=facts.name if facts else None,
        phone=facts.phone if facts else reply.from_phone,
        language=facts.language if facts else None,
        timezone=facts.timezone if facts else None,
        words=reply.body,
        answers=answered.get(reply.answers_message_id) if reply.answers_message_id else None,
        answered_with=ANSWER_WORDS.get(reply.answer_kind or "", reply.answer_kind),
        alerts=tuple(alerts.get(reply.id, ())),
        handled_at=reply.handled_at,
        handled_by=reply.handled_by,
        note=reply.handled_note,
    )


def text_item(problem: CriticalProblem, patients: dict[int, PatientFacts]) -> InboxItem:
    from followup.sendlog.service import explain_error

    if problem.status == CANCELLED:
        reason = f"{problem.step} not sent: patient opted out before it"
    else:
        reason = f"{problem.step} {problem.status}"
        if problem.error_code:
            reason += f" (error {problem.error_code}): {explain_error(problem.error_code)}"
    facts = patients.get(problem.patient_id)
    return InboxItem(
        kind=TEXT,
        item_id=problem.message_id,
        urgent=False,
        at=problem.updated_at,
        reason=reason,
        patient_id=problem.patient_id,
        patient_name=facts.name if facts else None,
        phone=facts.phone if facts else None,
        language=facts.language if facts else None,
        timezone=facts.timezone if facts else None,
        action="Call the patient: they may not know when to restart their medicine.",
    )


def unreachable_item(
    row: tuple[int, int, datetime, int, str | None], patients: dict[int, PatientFacts]
) -> InboxItem:
    patient_id, _first_id, at, failed, code = row
    rule = CANNOT_RECEIVE.get(code or "")
    words = rule.words if rule else "the number cannot receive texts"
    facts = patients.get(patient_id)
    count = f"; {failed} texts failed" if failed > 1 else ""
    return InboxItem(
        kind=UNREACHABLE,
        item_id=patient_id,
        urgent=False,
        at=at,
        reason=f"cannot receive texts: {words} (Twilio error {code}){count}",
        patient_id=patient_id,
        patient_name=facts.name if facts else None,
        phone=facts.phone if facts else None,
        language=facts.language if facts else None,
        timezone=facts.timezone if facts else None,
        action=rule.action if rule else "Call the patient and check the phone number.",
    )


def held_item(
    row: HeldRow, patients: dict[int, PatientFacts], critical_steps: frozenset[str]
) -> InboxItem:
    from followup.patients.pages import step_label

    facts = patients.get(row.patient_id)
    blocked = None
    if row.opted_out:
        blocked = "the patient opted out"
    elif row.procedure_cancelled:
        blocked = "the procedure was cancelled"
    if row.step in critical_steps:
        action = (
            "Check Twilio's console or call the patient: they may not know when to restart "
            "their medicine. Then say what happened."
        )
    else:
        action = "Check Twilio's console or ask the patient whether it arrived; then decide."
    return InboxItem(
        kind=UNKNOWN,
        item_id=row.message_id,
        urgent=False,
        at=row.held_at,
        reason=f"{row.step}: outcome unknown, the provider cannot tell whether it was sent",
        patient_id=row.patient_id,
        patient_name=facts.name if facts else None,
        phone=facts.phone if facts else None,
        language=facts.language if facts else None,
        timezone=facts.timezone if facts else None,
        action=action,
        step=step_label(row.step),
        handed_at=row.handed_at,
        expires_at=row.expires_at,
        resend_blocked=blocked,
    )

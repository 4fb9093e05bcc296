"""The care team's queue (needs attention) and the alerts that bring staff to it.

The queue holds three kinds of item, each derived from the data as it is, so an item is
there the moment its cause is recorded:

- `reply`: a reply triaged urgent or needs-reading, or from an unknown number, not yet
  handled (inbound_messages.handled_at);
- `text`: a critical text (the blood-thinner restart) that failed, expired, was not
  delivered, or was cancelled by an opt-out, with no AttentionResolution;
- `unreachable`: a patient one of whose texts failed with an error that means the number
  cannot receive texts (CANNOT_RECEIVE), one item per patient however many texts failed,
  until a nurse handles it (UnreachableResolution).

Urgent items come first, then the rest oldest first. Handling any item takes a note; the
note, who and when are kept on the item, shown on the patient's page and audited.

Alerts: an urgent reply texts ONCALL_PHONE and e-mails ALERT_EMAIL at once; still
unhandled after ESCALATE_AFTER_MINUTES, it alerts again, ESCALATION_PHONE too. Each alert
is a StaffAlert row, claimed (inserted under a unique key) before it is sent, so two
processes never send the same alert, and a sender that dies mid-send never resends it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from followup.audit.service import record_audit
from followup.care.texts import short_local
from followup.care.timing import zone
from followup.errors import NotFound, ValidationError
from followup.inbox.models import (
    ALERT_DELIVERED,
    ALERT_FAILED,
    ALERT_RETRY,
    ALERT_SENDING,
    ALERT_SENT,
    ALERT_UNKNOWN,
    EMAIL,
    ESCALATION,
    FIRST,
    SMS,
    AttentionResolution,
    StaffAlert,
    UnreachableResolution,
)
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    FAILED,
    TRIAGE_URGENT,
    UNDELIVERED,
    HeldStatusReport,
    InboundMessage,
    Message,
    MessageEvent,
)
from followup.messaging.reports import Report
from followup.messaging.transports.base import (
    OutgoingSms,
    PermanentSendError,
    SmsTransport,
    TransientSendError,
    mask_phone,
)
from followup.patients.models import Patient
from followup.settings import Settings

log = logging.getLogger(__name__)

REPLY = "reply"
TEXT = "text"
UNREACHABLE = "unreachable"
ATTENTION_KINDS = (REPLY, TEXT, UNREACHABLE)
QUEUE_LIMIT = 200  # items of each kind on one page; urgent replies are never cut
URGENT_CAP = 1000  # a safety bound, far above any real backlog of urgent replies
MAX_NOTE = 500
# Statuses of a critical text (the blood-thinner restart) that a nurse must follow up.
CRITICAL_PROBLEM_STATUSES = (FAILED, EXPIRED, UNDELIVERED)
LANGUAGE_NAMES = {"en": "English", "es": "Spanish"}


@dataclass(frozen=True)
class CannotReceive:
    """A provider error that means the number cannot receive texts, and what to do."""

    words: str
    action: str


# Twilio error codes that mean "this number cannot receive our texts" (a permanent
# failure of the number, not of one text). 30003 (handset off or out of coverage) is left
# out: it passes by itself.
CANNOT_RECEIVE: dict[str, CannotReceive] = {
    "21211": CannotReceive(
        "the phone number is not valid", "Call the patient and correct the phone number."
    ),
    "21614": CannotReceive(
        "the number is not a mobile phone",
        "Call the patient; ask for a mobile number and change the phone on their page.",
    ),
    "30006": CannotReceive(
        "the number is a landline or its carrier cannot be reached",
        "Call the patient; ask for a mobile number and change the phone on their page.",
    ),
    "30005": CannotReceive(
        "the number does not exist or is no longer in service",
        "Call the patient (or their contact) and correct the phone number.",
    ),
    "21612": CannotReceive(
        "texts cannot be routed to this number",
        "Call the patient; ask for another mobile number.",
    ),
    "30004": CannotReceive(
        "the patient's phone or carrier blocks our texts",
        "Call the patient; they may need to unblock the clinic's number.",
    ),
    "21408": CannotReceive(
        "texts to this country are not enabled",
        "Call the patient; ask an admin to enable the country in Twilio's settings.",
    ),
}
_FAILURE_STATUSES = (FAILED, UNDELIVERED)


# --- the queue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    """One alert as staff see it on the item."""

    round: int
    channel: str
    role: str
    recipient: str
    status: str
    claimed_at: datetime
    sent_at: datetime | None
    error: str | None

    @property
    def describe(self) -> str:
        """ "SMS to on-call +12025550100: sent" in words."""
        who = {"oncall": "on-call", "escalation": "escalation"}.get(self.role, "")
        how = "SMS" if self.channel == SMS else "e-mail"
        words = f"{how} to {who + ' ' if who else ''}{self.recipient}: {self.status}"
        if self.round == ESCALATION:
            words = "escalation " + words
        return words + (f" ({self.error})" if self.error else "")


@dataclass(frozen=True)
class InboxItem:
    """One thing a person must follow up, with everything needed to call the patient."""

    kind: str  # REPLY, TEXT or UNREACHABLE
    item_id: int  # the reply's id, the text's id, or the patient's id (UNREACHABLE)
    urgent: bool
    at: datetime  # when it arrived (the reply) or happened (the failure)
    reason: str  # why it needs a person, in words
    patient_id: int | None = None  # None for a reply from an unknown number
    patient_name: str | None = None
    phone: str | None = None  # E.164: the patient's, or the unknown sender's
    language: str | None = None  # "English" / "Spanish"
    timezone: str | None = None
    words: str | None = None  # the reply's words, in full
    answers: str | None = None  # the text the reply answers ("Pain check, sent ...")
    answered_with: str | None = None  # the automatic answer it got
    action: str | None = None  # what to do (unreachable)
    alerts: tuple[AlertView, ...] = ()
    handled_at: datetime | None = None
    handled_by: str | None = None
    note: str | None = None

    @property
    def key(self) -> str:
        """The item as the CLI names it: reply:12, text:5, unreachable:3."""
        return f"{self.kind}:{self.item_id}"

    @property
    def phone_display(self) -> str | None:
        """The phone as a person dials it (+1 202-555-0143)."""
        if not self.phone:
            return None
        try:
            number = phonenumbers.parse(self.phone)
        except phonenumbers.NumberParseException:
            return self.phone
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL))

    def waited(self, now: datetime) -> str:
        """How long it has waited, in words ("2 h 05 min")."""
        return waited_words(now - self.at)


def waited_words(delta: timedelta) -> str:
    """A duration for staff: "4 min", "2 h 05 min", "3 days 4 h"."""
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} day{'s' if days != 1 else ''} {hours} h"


@dataclass(frozen=True)
class Queue:
    items: list[InboxItem]
    open_count: int
    urgent_count: int

    @property
    def truncated(self) -> bool:
        return self.open_count > len(self.items)


@dataclass(frozen=True)
class CriticalProblem:
    message_id: int
    patient_id: int
    step: str
    status: str
    error_code: str | None
    updated_at: datetime


def critical_text_problems(
    *,
    session: so.Session,
    critical_steps: frozenset[str],
    limit: int = QUEUE_LIMIT,
    unhandled_only: bool = True,
) -> list[CriticalProblem]:
    """Critical texts that failed, expired or were not delivered, or were cancelled by an
    opt-out, newest first: each means a patient may not know when to restart a medicine.

    Ids first, from ranges of ix_messages_problems (an OR over statuses and
    the patient's opt-out would read every critical text ever planned); then the few
    columns the queue shows, for those rows only.
    """
    if not critical_steps:
        return []
    candidates: list[tuple[int, datetime]] = []
    for query in _critical_queries(critical_steps, unhandled_only):
        candidates += [
            (row[0], row[1])
            for row in session.execute(query.order_by(Message.updated_at.desc()).limit(limit))
        ]
    candidates.sort(key=lambda row: row[1], reverse=True)
    ids = [message_id for message_id, _ in candidates[:limit]]
    if not ids:
        return []
    rows = session.execute(
        sa.select(
            Message.id,
            Message.patient_id,
            Message.step,
            Message.status,
            Message.error_code,
            Message.updated_at,
        ).where(Message.id.in_(ids))
    ).all()
    problems = [CriticalProblem(*row) for row in rows]
    problems.sort(key=lambda problem: problem.updated_at, reverse=True)
    return problems


def _critical_queries(critical_steps: frozenset[str], unhandled_only: bool) -> list[Any]:
    steps = sorted(critical_steps)
    handled = sa.exists().where(AttentionResolution.message_id == Message.id)
    # One query per status: each walks the index backwards and stops after `limit` rows.
    queries: list[Any] = [
        sa.select(Message.id, Message.updated_at).where(
            Message.step.in_(steps), Message.status == status
        )
        for status in CRITICAL_PROBLEM_STATUSES
    ]
    queries.append(
        sa.select(Message.id, Message.updated_at)
        .join(Patient, Patient.id == Message.patient_id)
        .where(
            Message.step.in_(steps),
            Message.status == CANCELLED,
            Patient.opted_out_at.is_not(None),
        )
    )
    return [q.where(~handled) for q in queries] if unhandled_only else queries


def _unreachable_covered() -> sa.ColumnElement[bool]:
    """A failure already covered by a handled "cannot receive texts" item."""
    covering = so.aliased(Message)
    return (
        sa.select(UnreachableResolution.id)
        .join(covering, covering.id == UnreachableResolution.message_id)
        .where(
            UnreachableResolution.patient_id == Message.patient_id,
            sa.or_(
                UnreachableResolution.message_id >= Message.id,
                covering.to_phone == Message.to_phone,
            ),
        )
        .exists()
    )


def _open_failures() -> Any:
    """Texts that failed with a cannot-receive code and no handled item covers."""
    return sa.select(Message.patient_id).where(
        Message.status.in_(_FAILURE_STATUSES),
        Message.error_code.in_(sorted(CANNOT_RECEIVE)),
        ~_unreachable_covered(),
    )


def _open_reply_filter() -> sa.ColumnElement[bool]:
    return sa.and_(InboundMessage.needs_attention.is_(True), InboundMessage.handled_at.is_(None))


def attention_queue(
    *, session: so.Session, critical_steps: frozenset[str], limit: int = QUEUE_LIMIT
) -> Queue:
    """Everything a person must follow up: urgent replies first, then the rest oldest first.

    Every urgent reply is listed however many there are (up to URGENT_CAP); of the others,
    the oldest `limit` of each kind.
    """
    urgent_replies = list(
        session.scalars(
            sa.select(InboundMessage)
            .where(_open_reply_filter(), InboundMessage.triage == TRIAGE_URGENT)
            .order_by(InboundMessage.received_at, InboundMessage.id)
            .limit(URGENT_CAP)
        )
    )
    other_replies = list(
        session.scalars(
            sa.select(InboundMessage)
            .where(_open_reply_filter(), InboundMessage.triage != TRIAGE_URGENT)
            .order_by(InboundMessage.received_at, InboundMessage.id)
            .limit(limit)
        )
    )
    problems = critical_text_problems(session=session, critical_steps=critical_steps, limit=limit)
    unreachable = _unreachable_rows(session, limit=limit)

    patient_ids = {r.patient_id for r in urgent_replies + other_replies if r.patient_id}
    patient_ids |= {p.patient_id for p in problems} | {u[0] for u in unreachable}
    patients = _patients(session, patient_ids)
    replies = urgent_replies + other_replies
    alerts = _alerts_by_reply(session, [r.id for r in replies])
    answered = _answered_texts(session, [r.answers_message_id for r in replies])

    items = [_reply_item(r, patients, alerts, answered) for r in replies]
    items += [_text_item(p, patients) for p in problems]
    items += [_unreachable_item(row, patients) for row in unreachable]
    items.sort(key=lambda item: (not item.urgent, item.at, item.kind, item.item_id))
    counts = queue_counts(session=session, critical_steps=critical_steps)
    return Queue(items=items, open_count=counts.open, urgent_count=counts.urgent)


@dataclass(frozen=True)
class QueueCounts:
    open: int
    urgent: int


def queue_counts(*, session: so.Session, critical_steps: frozenset[str]) -> QueueCounts:
    """How many items are open, and how many of them are urgent (the header's figures)."""
    replies = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.count().filter(InboundMessage.triage == TRIAGE_URGENT),
        ).where(_open_reply_filter())
    ).one()
    texts = 0
    for query in _critical_queries(critical_steps, True) if critical_steps else []:
        texts += session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    failing = _open_failures().subquery()
    unreachable = session.scalar(sa.select(sa.func.count(sa.distinct(failing.c.patient_id)))) or 0
    return QueueCounts(open=int(replies[0]) + texts + unreachable, urgent=int(replies[1]))


def _unreachable_rows(
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
            Message.status.in_(_FAILURE_STATUSES),
            Message.error_code.in_(sorted(CANNOT_RECEIVE)),
            ~_unreachable_covered(),
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
class _PatientFacts:
    name: str
    phone: str
    language: str
    timezone: str


def _patients(session: so.Session, ids: Iterable[int]) -> dict[int, _PatientFacts]:
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
        r[0]: _PatientFacts(f"{r[1]} {r[2]}", r[3], LANGUAGE_NAMES.get(r[4], r[4]), r[5])
        for r in rows
    }


def _alerts_by_reply(session: so.Session, ids: Sequence[int]) -> dict[int, list[AlertView]]:
    found: dict[int, list[AlertView]] = defaultdict(list)
    if not ids:
        return found
    for alert in session.scalars(
        sa.select(StaffAlert)
        .where(StaffAlert.inbound_message_id.in_(sorted(set(ids))))
        .order_by(StaffAlert.claimed_at, StaffAlert.id)
    ):
        found[alert.inbound_message_id].append(_alert_view(alert))
    return found


def _alert_view(alert: StaffAlert) -> AlertView:
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


def _answered_texts(session: so.Session, ids: Iterable[int | None]) -> dict[int, str]:
    from followup.patients.service import step_label

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


def _reply_reason(reply: InboundMessage) -> str:
    reason = reply.triage_reason
    if not reason:  # replies stored before triage had words
        if reply.pain_score is not None:
            reason = f"pain score {reply.pain_score} of 10"
        else:
            reason = f"reply needs reading ({reply.kind})"
    if reply.patient_id is None:
        return f"reply from an unknown number: {reason}"
    return reason


def _reply_item(
    reply: InboundMessage,
    patients: dict[int, _PatientFacts],
    alerts: dict[int, list[AlertView]],
    answered: dict[int, str],
) -> InboxItem:
    facts = patients.get(reply.patient_id) if reply.patient_id is not None else None
    return InboxItem(
        kind=REPLY,
        item_id=reply.id,
        urgent=reply.triage == TRIAGE_URGENT,
        at=reply.received_at,
        reason=_reply_reason(reply),
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


def _text_item(problem: CriticalProblem, patients: dict[int, _PatientFacts]) -> InboxItem:
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


def _unreachable_item(
    row: tuple[int, int, datetime, int, str | None], patients: dict[int, _PatientFacts]
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


# --- handling -----------------------------------------------------------------------------


def mark_handled(
    *, session: so.Session, kind: str, item_id: int, note: str, actor: str, now: datetime
) -> None:
    """Take an item off the queue with a note; its history stays (the caller commits).

    `item_id` is the reply's id, the text's id, or (unreachable) the patient's id.
    """
    note = (note or "").strip()
    if kind not in ATTENTION_KINDS:
        raise ValidationError("kind", f"must be one of: {', '.join(ATTENTION_KINDS)}")
    if not note:
        raise ValidationError("note", "is required: say what was done")
    if len(note) > MAX_NOTE:
        raise ValidationError("note", f"is longer than {MAX_NOTE} characters")
    if kind == REPLY:
        record_type = _handle_reply(session, item_id, note, actor, now)
    elif kind == TEXT:
        record_type = _handle_text(session, item_id, note, actor, now)
    else:
        record_type = _handle_unreachable(session, item_id, note, actor, now)
    record_audit(
        session=session,
        actor=actor,
        action="attention.handled",
        now=now,
        record_type=record_type,
        record_id=item_id,
        detail=f"{kind} {item_id} handled: {note}"[:500],
    )
    log.info("attention item %s:%s handled", kind, item_id)


def _handle_reply(session: so.Session, item_id: int, note: str, actor: str, now: datetime) -> str:
    done = session.execute(
        sa.update(InboundMessage)
        .where(InboundMessage.id == item_id, InboundMessage.handled_at.is_(None))
        .values(handled_at=now, handled_by=actor, handled_note=note)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount == 0:  # type: ignore[attr-defined]
        reply = session.get(InboundMessage, item_id)
        if reply is None:
            raise NotFound(f"no reply {item_id}")
        session.refresh(reply)
        raise ValidationError("item", f"was already handled by {reply.handled_by}")
    return "inbound_message"


def _handle_text(session: so.Session, item_id: int, note: str, actor: str, now: datetime) -> str:
    message = session.get(Message, item_id)
    if message is None:
        raise NotFound(f"no text {item_id}")
    done = session.scalar(
        sa.select(AttentionResolution.handled_by).where(AttentionResolution.message_id == item_id)
    )
    if done is not None:
        raise ValidationError("item", f"was already handled by {done}")
    try:
        with session.begin_nested():
            session.add(
                AttentionResolution(message_id=item_id, handled_at=now, handled_by=actor, note=note)
            )
    except sa.exc.IntegrityError as exc:
        raise ValidationError("item", "was already handled by someone else") from exc
    session.add(
        MessageEvent(
            message_id=item_id, at=now, kind="handled", status=message.status, detail=f"by {actor}"
        )
    )
    return "message"


def _handle_unreachable(
    session: so.Session, patient_id: int, note: str, actor: str, now: datetime
) -> str:
    if session.get(Patient, patient_id) is None:
        raise NotFound(f"no patient {patient_id}")
    newest = session.scalar(
        sa.select(sa.func.max(Message.id)).where(
            Message.patient_id == patient_id,
            Message.status.in_(_FAILURE_STATUSES),
            Message.error_code.in_(sorted(CANNOT_RECEIVE)),
            ~_unreachable_covered(),
        )
    )
    if newest is None:
        raise ValidationError("item", "was already handled: nothing is open for this patient")
    try:
        with session.begin_nested():
            session.add(
                UnreachableResolution(
                    patient_id=patient_id,
                    message_id=newest,
                    handled_at=now,
                    handled_by=actor,
                    note=note,
                )
            )
    except sa.exc.IntegrityError as exc:
        raise ValidationError("item", "was already handled by someone else") from exc
    return "patient"


# --- what the patient's page and the patients list show ------------------------------------


@dataclass(frozen=True)
class HandledNote:
    """A handled item, for the patient's timeline."""

    at: datetime
    kind: str
    reason: str
    handled_by: str
    note: str


def handled_notes(*, session: so.Session, patient_id: int) -> list[HandledNote]:
    """Every note written when handling this patient's items, oldest first."""
    notes = [
        HandledNote(r.handled_at, REPLY, _reply_reason(r), r.handled_by or "", r.handled_note or "")
        for r in session.scalars(
            sa.select(InboundMessage).where(
                InboundMessage.patient_id == patient_id, InboundMessage.handled_at.is_not(None)
            )
        )
        if r.handled_at is not None
    ]
    for resolution, step, status in session.execute(
        sa.select(AttentionResolution, Message.step, Message.status)
        .join(Message, Message.id == AttentionResolution.message_id)
        .where(Message.patient_id == patient_id)
    ).all():
        notes.append(
            HandledNote(
                resolution.handled_at,
                TEXT,
                f"{step} {status}",
                resolution.handled_by,
                resolution.note,
            )
        )
    for unreachable in session.scalars(
        sa.select(UnreachableResolution).where(UnreachableResolution.patient_id == patient_id)
    ):
        notes.append(
            HandledNote(
                unreachable.handled_at,
                UNREACHABLE,
                "cannot receive texts",
                unreachable.handled_by,
                unreachable.note,
            )
        )
    notes.sort(key=lambda n: n.at)
    return notes


FLAG_UNREACHABLE = "unreachable"
FLAG_OPTED_OUT = "opted-out"
FLAG_OPEN = "open"
PATIENT_FLAGS = {
    FLAG_UNREACHABLE: "Cannot receive texts",
    FLAG_OPTED_OUT: "Opted out",
    FLAG_OPEN: "Has open items",
}


@dataclass(frozen=True)
class PatientFlags:
    unreachable: bool = False
    opted_out: bool = False
    open_items: int = 0


def _unreachable_patients() -> Any:
    """Patients whose current number failed with a cannot-receive error."""
    return (
        sa.select(Message.patient_id)
        .join(Patient, Patient.id == Message.patient_id)
        .where(
            Message.status.in_(_FAILURE_STATUSES),
            Message.error_code.in_(sorted(CANNOT_RECEIVE)),
            Message.to_phone == Patient.phone,
        )
    )


def _open_item_patients(critical_steps: frozenset[str]) -> Any:
    parts: list[Any] = [
        sa.select(InboundMessage.patient_id).where(
            _open_reply_filter(), InboundMessage.patient_id.is_not(None)
        ),
        _open_failures(),
    ]
    if critical_steps:
        ids = sa.union_all(
            *(sa.select(q.subquery().c.id) for q in _critical_queries(critical_steps, True))
        ).subquery()
        parts.append(sa.select(Message.patient_id).where(Message.id.in_(sa.select(ids.c.id))))
    return sa.union(*parts)


def flag_condition(flag: str, critical_steps: frozenset[str]) -> sa.ColumnElement[bool]:
    """Which patients a patients-list filter keeps; ValidationError('show') if unknown."""
    if flag == FLAG_OPTED_OUT:
        return Patient.opted_out_at.is_not(None)
    if flag == FLAG_UNREACHABLE:
        return Patient.id.in_(_unreachable_patients())
    if flag == FLAG_OPEN:
        return Patient.id.in_(_open_item_patients(critical_steps))
    raise ValidationError("show", f"must be one of: {', '.join(PATIENT_FLAGS)}")


def patient_flags(
    *, session: so.Session, patient_ids: Sequence[int], critical_steps: frozenset[str]
) -> dict[int, PatientFlags]:
    """For each listed patient: cannot receive texts, opted out, open items."""
    ids = sorted(set(patient_ids))
    if not ids:
        return {}
    unreachable = set(session.scalars(_unreachable_patients().where(Message.patient_id.in_(ids))))
    opted_out = set(
        session.scalars(
            sa.select(Patient.id).where(Patient.id.in_(ids), Patient.opted_out_at.is_not(None))
        )
    )
    open_counts: dict[int, int] = defaultdict(int)
    for reply_patient, count in session.execute(
        sa.select(InboundMessage.patient_id, sa.func.count())
        .where(_open_reply_filter(), InboundMessage.patient_id.in_(ids))
        .group_by(InboundMessage.patient_id)
    ):
        if reply_patient is not None:
            open_counts[reply_patient] += count
    for patient_id in session.scalars(
        _open_failures().where(Message.patient_id.in_(ids)).distinct()
    ):
        open_counts[patient_id] += 1
    for query in _critical_queries(critical_steps, True) if critical_steps else []:
        sub = query.subquery()
        for patient_id, count in session.execute(
            sa.select(Message.patient_id, sa.func.count())
            .where(Message.id.in_(sa.select(sub.c.id)), Message.patient_id.in_(ids))
            .group_by(Message.patient_id)
        ):
            open_counts[patient_id] += count
    return {
        i: PatientFlags(i in unreachable, i in opted_out, open_counts.get(i, 0))
        for i in ids
        if i in unreachable or i in opted_out or open_counts.get(i)
    }


# --- alerts -------------------------------------------------------------------------------

ALERT_STEP = "staff-alert"  # the step an alert SMS carries through the transport
ALERT_LEASE = timedelta(minutes=5)  # a claim still `sending` after this: its sender died
ALERT_RETRY_AFTER = timedelta(minutes=1)  # then 2, 3, ... minutes
MAX_ALERT_ATTEMPTS = 5


class MailError(Exception):
    """The mail server did not take an alert; `permanent` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, body: str) -> None:
        """Send one plain-text e-mail; raise MailError."""
        ...


@dataclass(frozen=True)
class AlertSettings:
    """Whom to alert and how: from ONCALL_PHONE, ESCALATION_PHONE, ALERT_EMAIL."""

    oncall_phone: str | None = None
    escalation_phone: str | None = None
    emails: tuple[str, ...] = ()
    public_base_url: str | None = None
    escalate_after: timedelta = timedelta(minutes=15)
    clinic_name: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertSettings:
        return cls(
            oncall_phone=settings.oncall_phone,
            escalation_phone=settings.escalation_phone,
            emails=settings.alert_email,
            public_base_url=settings.public_base_url,
            escalate_after=timedelta(minutes=settings.escalate_after_minutes),
            clinic_name=settings.clinic_name,
        )

    def recipients(self, round_: int) -> list[tuple[str, str, str]]:
        """(channel, role, recipient) for one round of alerts."""
        found: list[tuple[str, str, str]] = []
        if self.oncall_phone:
            found.append((SMS, "oncall", self.oncall_phone))
        if round_ == ESCALATION and self.escalation_phone:
            if self.escalation_phone != self.oncall_phone:
                found.append((SMS, "escalation", self.escalation_phone))
        found += [(EMAIL, "email", address) for address in self.emails]
        return found

    @property
    def queue_url(self) -> str | None:
        return f"{self.public_base_url.rstrip('/')}/attention" if self.public_base_url else None


def alert_text(*, count: int, escalation: bool, settings: AlertSettings) -> str:
    """The alert's words: a count and a link, never a name, a phone or the reply's words."""
    what = f"{count} urgent repl{'y' if count == 1 else 'ies'} waiting"
    where = settings.queue_url or "open Needs attention in followup"
    text = f"{what}: {where}"
    if escalation:
        minutes = int(settings.escalate_after.total_seconds() // 60)
        text = f"Still unhandled after {minutes} min: {text}"
    return text


@dataclass
class AlertReport(Report):
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    unknown: int = 0


def _insert(session: so.Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def run_alerts(
    *,
    session: so.Session,
    settings: AlertSettings,
    sms: SmsTransport | None,
    mailer: Mailer | None,
    now: datetime,
    owner: str,
) -> AlertReport:
    """Alert staff about urgent replies nobody has handled: at once, then escalated.

    For each recipient, every alert due (a new urgent reply; one unhandled past
    escalate_after) is claimed first, committed, then sent as one message; outcomes are
    committed after. Returns what happened.
    """
    report = AlertReport()
    report.unknown += _settle_stale(session, now)
    urgent = session.execute(
        sa.select(InboundMessage.id, InboundMessage.received_at)
        .where(_open_reply_filter(), InboundMessage.triage == TRIAGE_URGENT)
        .order_by(InboundMessage.received_at)
        .limit(URGENT_CAP)
    ).all()
    _drop_retries_of_handled(session, now)
    session.commit()
    if not urgent:
        return report
    due: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for reply_id, received_at in urgent:
        rounds = [FIRST] + ([ESCALATION] if received_at <= now - settings.escalate_after else [])
        for round_ in rounds:
            for target in settings.recipients(round_):
                due[target].append((reply_id, round_))
    for (channel, role, recipient), pairs in due.items():
        if channel == SMS and sms is None or channel == EMAIL and mailer is None:
            continue
        claimed = _claim(session, channel, role, recipient, pairs, now, owner)
        session.commit()
        if not claimed:
            continue
        report.claimed += len(claimed)
        escalation = any(round_ == ESCALATION for _, round_ in claimed)
        text = alert_text(count=len(urgent), escalation=escalation, settings=settings)
        ids = [alert_id for alert_id, _ in claimed]
        if channel == SMS:
            assert sms is not None  # noqa: S101 - checked above
            values = _send_sms(sms, ids, recipient, text, now, report)
        else:
            assert mailer is not None  # noqa: S101 - checked above
            values = _send_mail(mailer, recipient, text, escalation, now, report)
        _record_outcome(session, ids, values, now)
        if values.get("provider_sid"):
            _apply_held_reports(session, values["provider_sid"])
        session.commit()
        log.info(
            "alerts %s channel=%s role=%s outcome=%s",
            ",".join(str(i) for i in ids),
            channel,
            role,
            values["status"],
        )
    return report


def _settle_stale(session: so.Session, now: datetime) -> int:
    """Claims left in `sending` past the lease: their sender died. Never resent."""
    result = session.execute(
        sa.update(StaffAlert)
        .where(StaffAlert.status == ALERT_SENDING, StaffAlert.claimed_at < now - ALERT_LEASE)
        .values(
            status=ALERT_UNKNOWN,
            error="the sender stopped while sending; not resent in case it went",
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _drop_retries_of_handled(session: so.Session, now: datetime) -> None:
    handled = sa.select(InboundMessage.id).where(InboundMessage.handled_at.is_not(None))
    session.execute(
        sa.update(StaffAlert)
        .where(StaffAlert.status == ALERT_RETRY, StaffAlert.inbound_message_id.in_(handled))
        .values(status=ALERT_FAILED, error="not sent: the reply was handled first", updated_at=now)
        .execution_options(synchronize_session=False)
    )


def _claim(
    session: so.Session,
    channel: str,
    role: str,
    recipient: str,
    pairs: list[tuple[int, int]],
    now: datetime,
    owner: str,
) -> list[tuple[int, int]]:
    """Claim the alerts in `pairs` (reply id, round) for one recipient; return (alert id,
    round) for those this process now owns: new rows, and retries whose time has come."""
    insert = _insert(session)
    rows = [
        {
            "inbound_message_id": reply_id,
            "round": round_,
            "channel": channel,
            "role": role,
            "recipient": recipient,
            "status": ALERT_SENDING,
            "attempts": 1,
            "claimed_at": now,
            "claimed_by": owner,
            "updated_at": now,
        }
        for reply_id, round_ in pairs
    ]
    statement = (
        insert(StaffAlert)
        .values(rows)
        .on_conflict_do_nothing(
            index_elements=["inbound_message_id", "round", "channel", "recipient"]
        )
        .returning(StaffAlert.id, StaffAlert.round)
    )
    claimed = [(r[0], r[1]) for r in session.execute(statement).all()]
    retry = session.execute(
        sa.update(StaffAlert)
        .where(
            StaffAlert.status == ALERT_RETRY,
            StaffAlert.channel == channel,
            StaffAlert.recipient == recipient,
            StaffAlert.not_before <= now,
            StaffAlert.inbound_message_id.in_(sorted({reply_id for reply_id, _ in pairs})),
        )
        .values(
            status=ALERT_SENDING,
            attempts=StaffAlert.attempts + 1,
            claimed_at=now,
            claimed_by=owner,
            updated_at=now,
        )
        .returning(StaffAlert.id, StaffAlert.round)
        .execution_options(synchronize_session=False)
    ).all()
    return claimed + [(r[0], r[1]) for r in retry]


def _send_sms(
    sms: SmsTransport,
    ids: list[int],
    phone: str,
    text: str,
    now: datetime,
    report: AlertReport,
) -> dict[str, Any]:
    try:
        result = sms.send(
            OutgoingSms(message_id=ids[0], step=ALERT_STEP, to=phone, body=text, now=now)
        )
    except TransientSendError as exc:
        if exc.maybe_sent:
            report.unknown += len(ids)
            return {"status": ALERT_UNKNOWN, "error": f"{exc.code}: may have gone; not resent"}
        report.retried += len(ids)
        return {"status": ALERT_RETRY, "error": f"{exc.code}: {exc.message}"}
    except PermanentSendError as exc:
        report.failed += len(ids)
        return {"status": ALERT_FAILED, "error": f"{exc.code}: {exc.message}"}
    except Exception as exc:  # noqa: BLE001 - unknown outcome: never resend an alert blindly
        report.unknown += len(ids)
        log.warning("alert sms to %s: transport raised %s", mask_phone(phone), type(exc).__name__)
        return {"status": ALERT_UNKNOWN, "error": f"transport error ({type(exc).__name__})"}
    report.sent += len(ids)
    return {"status": ALERT_SENT, "sent_at": now, "provider_sid": result.provider_sid}


def _apply_held_reports(session: so.Session, provider_sid: str) -> None:
    """Delivery reports for this alert SMS that came before its SID was recorded (Twilio
    may call back first; the webhook kept them): apply them in the order they came."""
    held = session.scalars(
        sa.select(HeldStatusReport)
        .where(HeldStatusReport.provider_sid == provider_sid)
        .order_by(HeldStatusReport.received_at, HeldStatusReport.id)
    ).all()
    for report in held:
        record_alert_status(
            session=session, provider_sid=provider_sid, status=report.status, now=report.received_at
        )
    if held:
        session.execute(
            sa.delete(HeldStatusReport).where(HeldStatusReport.id.in_([h.id for h in held]))
        )


def _send_mail(
    mailer: Mailer, address: str, text: str, escalation: bool, now: datetime, report: AlertReport
) -> dict[str, Any]:
    subject = ("Still unhandled: " if escalation else "") + "urgent patient reply waiting"
    body = (
        f"{text}\n\nOpen the Needs attention queue to read it and call the patient. This "
        "e-mail carries no patient details on purpose.\n"
    )
    try:
        mailer.send(to=address, subject=subject, body=body)
    except MailError as exc:
        if exc.permanent:
            report.failed += 1
            return {"status": ALERT_FAILED, "error": str(exc)}
        report.retried += 1
        return {"status": ALERT_RETRY, "error": str(exc)}
    report.sent += 1
    return {"status": ALERT_SENT, "sent_at": now}


def _record_outcome(
    session: so.Session, ids: list[int], values: dict[str, Any], now: datetime
) -> None:
    values = {**values, "updated_at": now}
    if "error" in values:
        values["error"] = str(values["error"])[:200]
    if values["status"] == ALERT_RETRY:
        # Wait a minute longer after each attempt; give up after MAX_ALERT_ATTEMPTS.
        attempts = session.execute(
            sa.select(StaffAlert.id, StaffAlert.attempts).where(StaffAlert.id.in_(ids))
        ).all()
        for alert_id, tries in attempts:
            row_values = (
                {**values, "status": ALERT_FAILED}
                if tries >= MAX_ALERT_ATTEMPTS
                else {**values, "not_before": now + ALERT_RETRY_AFTER * tries}
            )
            session.execute(
                sa.update(StaffAlert)
                .where(StaffAlert.id == alert_id)
                .values(**row_values)
                .execution_options(synchronize_session=False)
            )
        return
    session.execute(
        sa.update(StaffAlert)
        .where(StaffAlert.id.in_(ids), StaffAlert.status == ALERT_SENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def record_alert_status(
    *, session: so.Session, provider_sid: str, status: str, now: datetime
) -> bool:
    """Apply the provider's delivery report to an alert SMS; False if no alert has the SID."""
    target = {"delivered": ALERT_DELIVERED, "read": ALERT_DELIVERED}.get(status)
    if status in ("undelivered", "failed"):
        target = ALERT_FAILED
    alert_ids = list(
        session.scalars(sa.select(StaffAlert.id).where(StaffAlert.provider_sid == provider_sid))
    )
    if not alert_ids:
        return False
    if target is not None:
        session.execute(
            sa.update(StaffAlert)
            .where(
                StaffAlert.id.in_(alert_ids),
                StaffAlert.status.in_((ALERT_SENT, ALERT_DELIVERED)),
            )
            .values(
                status=target,
                updated_at=now,
                error=None if target == ALERT_DELIVERED else f"reported {status}",
            )
            .execution_options(synchronize_session=False)
        )
    log.info("alert status sid=%s status=%s", provider_sid, status)
    return True


def alerts_for(*, session: so.Session, reply_id: int) -> list[AlertView]:
    """Every alert sent about one reply, oldest first."""
    return _alerts_by_reply(session, [reply_id]).get(reply_id, [])

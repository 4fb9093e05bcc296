"""The care team's queue (needs attention): what a person must follow up, derived from the data.

The queue holds four kinds of item, each derived from the data as it is, so an item is
there the moment its cause is recorded:

- `reply`: a reply triaged urgent or needs-reading, or from an unknown number, not yet
  handled (inbound_messages.handled_at);
- `text`: a critical text (the blood-thinner restart) that failed, expired, was not
  delivered, or was cancelled by an opt-out, with no AttentionResolution written for it
  as it is (`handled_as_it_is`: one written before it came back and failed again is not);
- `unreachable`: a patient one of whose texts failed with an error that means the number
  cannot receive texts (CANNOT_RECEIVE), one item per patient however many texts failed,
  until a nurse handles it (UnreachableResolution);
- `unknown`: a text held by the reaper (`held_filter`): handed to the provider, its lease
  run out, and the provider cannot be asked or cannot tell whether it went out. Nothing
  resends it on a guess; a person settles it (inbox/held.py): it was sent, send it again
  (while its window is open), or do not send.

Urgent items come first, then the rest oldest first (`attention_queue`); the header's
figures come from `queue_counts`. Handling is in inbox/service.py, alerts in
inbox/alerts.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.texts import short_local
from followup.care.timing import zone
from followup.db import UTCDateTime
from followup.inbox.models import (
    ESCALATION,
    SMS,
    AttentionResolution,
    StaffAlert,
    UnreachableResolution,
)
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    FAILED,
    SENDING,
    TRIAGE_URGENT,
    UNDELIVERED,
    InboundMessage,
    Message,
    MessageEvent,
)
from followup.messaging.retries import HANDOVER_MARGIN
from followup.patients.models import Patient, Procedure

REPLY = "reply"
TEXT = "text"
UNREACHABLE = "unreachable"
UNKNOWN = "unknown"  # the provider cannot tell whether a text was sent (held by the reaper)
ATTENTION_KINDS = (REPLY, TEXT, UNREACHABLE, UNKNOWN)
# How a person settles an `unknown` item, and the words staff see for each decision.
SETTLE_SENT = "sent"
SETTLE_RESEND = "resend"
SETTLE_CANCEL = "cancel"
DECISIONS = {
    SETTLE_SENT: "It was sent",
    SETTLE_RESEND: "Send it again",
    SETTLE_CANCEL: "Do not send",
}
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
FAILURE_STATUSES = (FAILED, UNDELIVERED)


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

    kind: str  # REPLY, TEXT, UNREACHABLE or UNKNOWN
    item_id: int  # the reply's id, the text's id (TEXT, UNKNOWN), or the patient's id
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
    # A held text (UNKNOWN): which text, when it was handed over, when its window closes,
    # and why it may not be sent again whatever the time (opted out, procedure cancelled).
    step: str | None = None
    handed_at: datetime | None = None
    expires_at: datetime | None = None
    resend_blocked: str | None = None

    @property
    def key(self) -> str:
        """The item as the CLI names it: reply:12, text:5, unreachable:3, unknown:7."""
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

    def window_open(self, now: datetime) -> bool:
        """A held text could still be handed over before its window closes (the margin)."""
        return self.expires_at is not None and self.expires_at > now + HANDOVER_MARGIN

    def resend_refusal(self, now: datetime) -> str | None:
        """Why "send it again" is not offered for a held text now (None: it is)."""
        if self.resend_blocked:
            return self.resend_blocked
        if not self.window_open(now):
            return "its window has closed"
        return None


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
    for query in critical_queries(critical_steps, unhandled_only):
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


def handled_as_it_is() -> sa.Exists:
    """A mark covers the text as it is now: written for it since it last changed. A text
    brought back (START) that then fails or expires is a new problem, not covered."""
    return sa.exists().where(
        AttentionResolution.message_id == Message.id,
        AttentionResolution.problem_at >= Message.updated_at,
    )


def critical_problem(critical_steps: frozenset[str]) -> sa.ColumnElement[bool]:
    """A critical text a person must follow up, handled or not, as one condition on a text
    (the send log's filter); `critical_queries` finds the same texts by index, a query per
    status."""
    opted_out = sa.select(Patient.id).where(Patient.opted_out_at.is_not(None))
    return sa.and_(
        Message.step.in_(sorted(critical_steps)),
        sa.or_(
            Message.status.in_(CRITICAL_PROBLEM_STATUSES),
            sa.and_(Message.status == CANCELLED, Message.patient_id.in_(opted_out)),
        ),
    )


def critical_queries(critical_steps: frozenset[str], unhandled_only: bool) -> list[Any]:
    steps = sorted(critical_steps)
    handled = handled_as_it_is()
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


def unreachable_covered() -> sa.ColumnElement[bool]:
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


def open_failures() -> Any:
    """Texts that failed with a cannot-receive code and no handled item covers."""
    return sa.select(Message.patient_id).where(
        Message.status.in_(FAILURE_STATUSES),
        Message.error_code.in_(sorted(CANNOT_RECEIVE)),
        ~unreachable_covered(),
    )


def open_reply_filter() -> sa.ColumnElement[bool]:
    return sa.and_(InboundMessage.needs_attention.is_(True), InboundMessage.handled_at.is_(None))


def held_filter() -> sa.ColumnElement[bool]:
    """A text the reaper held for a person: handed over, outcome unknown, no lease.

    Every other text in `sending` is under a lease (a dispatcher's, or the reaper's while
    it asks the provider); the reaper releases it only when it holds the text. Read
    through ix_messages_status_due_at's status: the few texts in `sending`.
    """
    return sa.and_(
        Message.status == SENDING,
        Message.lease_owner.is_(None),
        Message.handed_at.is_not(None),
        Message.provider_sid.is_(None),
    )


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
            .where(open_reply_filter(), InboundMessage.triage == TRIAGE_URGENT)
            .order_by(InboundMessage.received_at, InboundMessage.id)
            .limit(URGENT_CAP)
        )
    )
    other_replies = list(
        session.scalars(
            sa.select(InboundMessage)
            .where(open_reply_filter(), InboundMessage.triage != TRIAGE_URGENT)
            .order_by(InboundMessage.received_at, InboundMessage.id)
            .limit(limit)
        )
    )
    problems = critical_text_problems(session=session, critical_steps=critical_steps, limit=limit)
    unreachable = _unreachable_rows(session, limit=limit)
    held = _held_rows(session, limit=limit)

    patient_ids = {r.patient_id for r in urgent_replies + other_replies if r.patient_id}
    patient_ids |= {p.patient_id for p in problems} | {u[0] for u in unreachable}
    patient_ids |= {h.patient_id for h in held}
    patients = _patients(session, patient_ids)
    replies = urgent_replies + other_replies
    alerts = alerts_by_reply(session, [r.id for r in replies])
    answered = _answered_texts(session, [r.answers_message_id for r in replies])

    items = [_reply_item(r, patients, alerts, answered) for r in replies]
    items += [_text_item(p, patients) for p in problems]
    items += [_unreachable_item(row, patients) for row in unreachable]
    items += [_held_item(row, patients, critical_steps) for row in held]
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
        ).where(open_reply_filter())
    ).one()
    texts = 0
    for query in critical_queries(critical_steps, True) if critical_steps else []:
        texts += session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    failing = open_failures().subquery()
    unreachable = session.scalar(sa.select(sa.func.count(sa.distinct(failing.c.patient_id)))) or 0
    held = session.scalar(sa.select(sa.func.count()).select_from(Message).where(held_filter()))
    return QueueCounts(
        open=int(replies[0]) + texts + unreachable + (held or 0), urgent=int(replies[1])
    )


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


def _held_rows(session: so.Session, *, limit: int) -> list[HeldRow]:
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


def alerts_by_reply(session: so.Session, ids: Sequence[int]) -> dict[int, list[AlertView]]:
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


def _held_item(
    row: HeldRow, patients: dict[int, _PatientFacts], critical_steps: frozenset[str]
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

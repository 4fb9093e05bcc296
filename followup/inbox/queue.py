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
figures come from `queue_counts`. This module decides what is open (its conditions and
counts); inbox/items.py reads each item as a person sees it. Handling is in
inbox/service.py, alerts in inbox/alerts.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.inbox.models import (
    ESCALATION,
    SMS,
    AttentionResolution,
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
from followup.messaging.outbox import OPTED_OUT
from followup.messaging.retries import HANDOVER_MARGIN

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


def cancelled_by_an_opt_out() -> sa.ColumnElement[bool]:
    """The text's last cancellation was an opt-out's (its event names it): why it was not
    sent, whatever the patient has said since. Read from the patient's opt-out now, a
    restart cancelled by STOP left the queue unhandled when the patient texted START after
    its window had closed (it stays cancelled: never sent), and one cancelled with its
    procedure came in as "opted out before it" once the patient texted STOP."""
    cancel = so.aliased(MessageEvent)
    last = (
        sa.select(sa.func.max(cancel.id))
        .where(cancel.message_id == Message.id, cancel.kind == "cancelled")
        .correlate(Message)
        .scalar_subquery()
    )
    return sa.exists().where(MessageEvent.id == last, MessageEvent.detail.contains(OPTED_OUT))


def critical_problem(critical_steps: frozenset[str]) -> sa.ColumnElement[bool]:
    """A critical text a person must follow up, handled or not, as one condition on a text
    (the send log's filter); `critical_queries` finds the same texts by index, a query per
    status."""
    return sa.and_(
        Message.step.in_(sorted(critical_steps)),
        sa.or_(
            Message.status.in_(CRITICAL_PROBLEM_STATUSES),
            sa.and_(Message.status == CANCELLED, cancelled_by_an_opt_out()),
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
        sa.select(Message.id, Message.updated_at).where(
            Message.step.in_(steps), Message.status == CANCELLED, cancelled_by_an_opt_out()
        )
    )
    return [q.where(~handled) for q in queries] if unhandled_only else queries


def unreachable_covered() -> sa.ColumnElement[bool]:
    """A failure already covered by a handled "cannot receive texts" item: one that had
    failed when the item was handled (its last change is the failure: a failed text is
    written no more), or a later one to the number the item was about. Not by id: texts
    do not fail in the order they were planned (a welcome planned for a lost introduction
    goes before the procedure's other texts), and a later failure on a new number with a
    lower id went unseen."""
    covering = so.aliased(Message)
    return (
        sa.select(UnreachableResolution.id)
        .join(covering, covering.id == UnreachableResolution.message_id)
        .where(
            UnreachableResolution.patient_id == Message.patient_id,
            sa.or_(
                Message.updated_at <= UnreachableResolution.handled_at,
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
    from followup.inbox.items import (
        alerts_by_reply,
        answered_texts,
        held_item,
        held_rows,
        patient_facts,
        reply_item,
        text_item,
        unreachable_item,
        unreachable_rows,
    )

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
    unreachable = unreachable_rows(session, limit=limit)
    held = held_rows(session, limit=limit)

    patient_ids = {r.patient_id for r in urgent_replies + other_replies if r.patient_id}
    patient_ids |= {p.patient_id for p in problems} | {u[0] for u in unreachable}
    patient_ids |= {h.patient_id for h in held}
    patients = patient_facts(session, patient_ids)
    replies = urgent_replies + other_replies
    alerts = alerts_by_reply(session, [r.id for r in replies])
    answered = answered_texts(session, [r.answers_message_id for r in replies])

    items = [reply_item(r, patients, alerts, answered) for r in replies]
    items += [text_item(p, patients) for p in problems]
    items += [unreachable_item(row, patients) for row in unreachable]
    items += [held_item(row, patients, critical_steps) for row in held]
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

"""Alerts that bring staff to the queue.

An urgent reply texts ONCALL_PHONE and e-mails ALERT_EMAIL at once; still unhandled after
ESCALATE_AFTER_MINUTES, it alerts again, ESCALATION_PHONE too. Each alert is a StaffAlert
row, claimed (inserted under a unique key) before it is sent, so two processes never send
the same alert, and a sender that dies mid-send never resends it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from followup.inbox.items import alerts_by_reply
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
    StaffAlert,
)
from followup.inbox.queue import URGENT_CAP, AlertView, open_reply_filter
from followup.messaging.models import (
    TRIAGE_URGENT,
    HeldStatusReport,
    InboundMessage,
)
from followup.messaging.reports import Report
from followup.messaging.transports.base import (
    OutgoingSms,
    PermanentSendError,
    SmsTransport,
    TransientSendError,
    mask_phone,
)
from followup.settings import Settings

log = logging.getLogger(__name__)


# --- alerts -------------------------------------------------------------------------------

ALERT_STEP = "staff-alert"  # the step an alert SMS carries through the transport
ALERT_LEASE = timedelta(minutes=5)  # a claim still `sending` after this: its sender died
HELD_ALERTS = 500  # held delivery reports applied to alert SMS in one run
ALERT_RETRY_AFTER = timedelta(minutes=1)  # then 2, 3, ... minutes
MAX_ALERT_ATTEMPTS = 5


class MailError(Exception):
    """The mail server did not take an alert; `permanent` when retrying cannot help;
    `maybe_sent` when the whole e-mail went before the failure (the server may have it)."""

    def __init__(self, message: str, *, permanent: bool, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.maybe_sent = maybe_sent


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


def alert_text(
    *, count: int, escalation: bool, settings: AlertSettings, first_failed: bool = False
) -> str:
    """The alert's words: a count and a link, never a name, a phone or the reply's words.
    An escalation brought forward because every first alert failed says so."""
    what = f"{count} urgent repl{'y' if count == 1 else 'ies'} waiting"
    where = settings.queue_url or "open Needs attention in followup"
    text = f"{what}: {where}"
    if escalation and first_failed:
        text = f"Still unhandled, the first alert could not be sent: {text}"
    elif escalation:
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
    apply_held_alert_reports(session)
    urgent = session.execute(
        sa.select(InboundMessage.id, InboundMessage.received_at)
        .where(open_reply_filter(), InboundMessage.triage == TRIAGE_URGENT)
        .order_by(InboundMessage.received_at)
        .limit(URGENT_CAP)
    ).all()
    _drop_retries_of_handled(session, now)
    session.commit()
    if not urgent:
        return report
    due: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    first_failed = _first_round_failed(
        session,
        [reply_id for reply_id, _ in urgent],
        {
            (channel, recipient)
            for channel, _, recipient in settings.recipients(FIRST)
            if (sms if channel == SMS else mailer) is not None
        },
    )
    for reply_id, received_at in urgent:
        late = received_at <= now - settings.escalate_after
        rounds = [FIRST] + ([ESCALATION] if late or reply_id in first_failed else [])
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
        escalated = {reply_id for _, round_, reply_id in claimed if round_ == ESCALATION}
        escalation = bool(escalated)
        text = alert_text(
            count=len(urgent),
            escalation=escalation,
            settings=settings,
            first_failed=escalation and escalated <= first_failed,
        )
        ids = [alert_id for alert_id, _, _ in claimed]
        if channel == SMS:
            assert sms is not None  # noqa: S101 - checked above
            values = _send_sms(sms, ids, recipient, text, now, report)
        else:
            assert mailer is not None  # noqa: S101 - checked above
            values = _send_mail(mailer, recipient, text, escalation, now, report)
        _record_outcome(session, ids, values, now)
        if values.get("provider_sid"):
            apply_held_alert_reports(session, values["provider_sid"])
        session.commit()
        log.info(
            "alerts %s channel=%s role=%s outcome=%s",
            ",".join(str(i) for i in ids),
            channel,
            role,
            values["status"],
        )
    return report


def _first_round_failed(
    session: so.Session, reply_ids: list[int], targets: set[tuple[str, str]]
) -> set[int]:
    """The replies whose every first alert failed for good (refused, reported undelivered,
    out of tries): nobody was reached, so the escalation does not wait its minutes.

    Each first alert this run sends (`targets`: channel, recipient) must have been tried:
    another process may not have claimed the e-mail yet when its SMS failed."""
    if not reply_ids or not targets:
        return set()
    rows = session.execute(
        sa.select(
            StaffAlert.inbound_message_id,
            StaffAlert.channel,
            StaffAlert.recipient,
            StaffAlert.status,
        ).where(StaffAlert.inbound_message_id.in_(reply_ids), StaffAlert.round == FIRST)
    ).all()
    tried: dict[int, set[tuple[str, str]]] = defaultdict(set)
    reached: set[int] = set()
    for reply_id, channel, recipient, status in rows:
        tried[reply_id].add((channel, recipient))
        if status != ALERT_FAILED:
            reached.add(reply_id)
    return {
        reply_id for reply_id, seen in tried.items() if reply_id not in reached and targets <= seen
    }


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
) -> list[tuple[int, int, int]]:
    """Claim the alerts in `pairs` (reply id, round) for one recipient; return (alert id,
    round, reply id) for those this process now owns: new rows, and retries whose time has come.
    Only for replies still unhandled now: the run read them before sending to the
    recipients before this one (seconds each), and a nurse may have handled one since
    (the escalation phone was paged "still unhandled" after she had)."""
    still_open = set(
        session.scalars(
            sa.select(InboundMessage.id).where(
                InboundMessage.id.in_(sorted({reply_id for reply_id, _ in pairs})),
                open_reply_filter(),
            )
        )
    )
    pairs = [(reply_id, round_) for reply_id, round_ in pairs if reply_id in still_open]
    if not pairs:
        return []
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
        .returning(StaffAlert.id, StaffAlert.round, StaffAlert.inbound_message_id)
    )
    claimed = [(r[0], r[1], r[2]) for r in session.execute(statement).all()]
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
        .returning(StaffAlert.id, StaffAlert.round, StaffAlert.inbound_message_id)
        .execution_options(synchronize_session=False)
    ).all()
    return claimed + [(r[0], r[1], r[2]) for r in retry]


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


def apply_held_alert_reports(session: so.Session, provider_sid: str | None = None) -> int:
    """Delivery reports held for alert SMS whose SID is now recorded (Twilio may call back
    first; the webhook kept them): apply them in the order they came; return how many.

    Right after recording a SID (`provider_sid`), and on every run for all of them: a
    report the webhook held while the SID's commit was under way (PostgreSQL: it saw
    neither) comes after the first look, and would otherwise wait until it is dropped.
    Not committed."""
    on_an_alert = sa.exists().where(StaffAlert.provider_sid == HeldStatusReport.provider_sid)
    query = sa.select(HeldStatusReport).where(on_an_alert)
    if provider_sid is not None:
        query = query.where(HeldStatusReport.provider_sid == provider_sid)
    held = session.scalars(
        query.order_by(HeldStatusReport.received_at, HeldStatusReport.id).limit(HELD_ALERTS)
    ).all()
    for report in held:
        record_alert_status(
            session=session,
            provider_sid=report.provider_sid,
            status=report.status,
            now=report.received_at,
        )
    if held:
        session.execute(
            sa.delete(HeldStatusReport).where(HeldStatusReport.id.in_([h.id for h in held]))
        )
    return len(held)


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
        if exc.maybe_sent:
            # Like an SMS whose request may have reached Twilio: never sent twice.
            report.unknown += 1
            return {"status": ALERT_UNKNOWN, "error": f"{exc}; may have gone: not resent"}
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
    return alerts_by_reply(session, [reply_id]).get(reply_id, [])

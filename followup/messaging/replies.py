"""Replies: store each inbound text once, classify it, act on keywords, answer HELP."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.messaging.models import (
    REPLY_HELP,
    REPLY_OTHER,
    REPLY_PAIN,
    REPLY_START,
    REPLY_STOP,
    REPLY_SYMPTOM,
    InboundMessage,
    Message,
)
from followup.messaging.outbox import OPTED_OUT, record_opt_in, record_opt_out
from followup.patients.models import Patient

log = logging.getLogger(__name__)

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP"})
# Twilio's Advanced Opt-Out names what it did with a reply in the OptOutType field.
OPT_OUT_TYPES = {"STOP": REPLY_STOP, "START": REPLY_START, "HELP": REPLY_HELP}
PAIN_ALERT = 7  # a pain score at or above this needs a nurse
PAIN_CHECK_STEP = "pain-check"
_PAIN_RE = re.compile(r"^(\d{1,2})(?:\s*/\s*10)?$")
# Words that need a nurse whatever else the reply says (with the Spanish a patient may use).
_WARNING_RE = re.compile(
    r"\b(worse|bleed\w*|fever\w*|numb\w*|weak\w*|peor|sangr\w*|fiebre|entumec\w*|d[eé]bil\w*)\b",
    re.IGNORECASE,
)
HELP_TEXT = {
    "en": "{clinic_name}: aftercare texts after your procedure. Questions? Call {clinic_phone}. "
    "In an emergency call 911. Reply STOP to end these texts.",
    "es": "{clinic_name}: mensajes de cuidados despues de su procedimiento. Preguntas? Llame al "
    "{clinic_phone}. En una emergencia llame al 911. Responda STOP para no recibir mas.",
}


@dataclass(frozen=True)
class Classified:
    kind: str
    pain_score: int | None = None
    needs_attention: bool = False


@dataclass(frozen=True)
class InboundResult:
    inbound: InboundMessage
    duplicate: bool  # the provider retried a webhook we had already stored
    reply: str | None  # text to answer with (HELP), or None


def classify_reply(body: str, *, opt_out_type: str | None, pain_check_sent: bool) -> Classified:
    """Say what a reply means: a keyword, a pain score, a warning sign or something else.

    Keywords are exact (any case, surrounding whitespace ignored); Twilio's OptOutType,
    when present, wins. A number 0-10 is a pain score only after a pain check was sent.
    """
    forced = OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())
    if forced is not None:
        return Classified(forced)
    text = body.strip()
    word = text.upper()
    if word in STOP_WORDS:
        return Classified(REPLY_STOP)
    if word in START_WORDS:
        return Classified(REPLY_START)
    if word in HELP_WORDS:
        return Classified(REPLY_HELP)
    if _WARNING_RE.search(text):
        return Classified(REPLY_SYMPTOM, needs_attention=True)
    match = _PAIN_RE.match(text)
    if match and pain_check_sent and int(match.group(1)) <= 10:
        score = int(match.group(1))
        return Classified(REPLY_PAIN, pain_score=score, needs_attention=score >= PAIN_ALERT)
    return Classified(REPLY_OTHER, needs_attention=True)


def record_inbound(
    *,
    session: so.Session,
    provider_sid: str,
    from_phone: str,
    body: str,
    opt_out_type: str | None,
    care: CareContext,
    now: datetime,
) -> InboundResult:
    """Store one reply, once per provider SID, and act on it; the caller commits.

    STOP opts out every patient with that number and cancels their pending texts; START
    opts them back in; HELP is answered. A sender who matches no patient is stored and
    flagged. Call it first in its transaction: a duplicate SID rolls the session back.
    """
    existing = _inbound_by_sid(session, provider_sid)
    if existing is not None:
        return InboundResult(existing, duplicate=True, reply=_reply_text(session, existing, care))
    patients = list(
        session.scalars(sa.select(Patient).where(Patient.phone == from_phone).order_by(Patient.id))
    )
    ids = [p.id for p in patients]
    pain_check_patient = (
        session.scalar(
            sa.select(Message.patient_id)
            .where(
                Message.patient_id.in_(ids),
                Message.step == PAIN_CHECK_STEP,
                Message.sent_at.is_not(None),
                Message.sent_at <= now,
            )
            .order_by(Message.sent_at.desc())
            .limit(1)
        )
        if ids
        else None
    )
    classified = classify_reply(
        body, opt_out_type=opt_out_type, pain_check_sent=pain_check_patient is not None
    )
    patient_id = (
        pain_check_patient
        if classified.kind == REPLY_PAIN
        else _last_texted_patient(session, ids)
        if ids
        else None
    )
    inbound = InboundMessage(
        patient_id=patient_id,
        from_phone=from_phone[:32],
        body=body,
        provider_sid=provider_sid,
        received_at=now,
        kind=classified.kind,
        pain_score=classified.pain_score,
        needs_attention=classified.needs_attention or not patients,
    )
    session.add(inbound)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # The same webhook, retried while the first was being stored.
        session.rollback()
        stored = _inbound_by_sid(session, provider_sid)
        if stored is None:
            raise
        return InboundResult(stored, duplicate=True, reply=_reply_text(session, stored, care))
    for patient in patients:
        if classified.kind == REPLY_STOP:
            record_opt_out(
                session=session,
                patient_id=patient.id,
                now=now,
                reason=f"patient replied STOP: {OPTED_OUT}",
            )
        elif classified.kind == REPLY_START:
            record_opt_in(session=session, patient_id=patient.id, care=care, now=now)
    log.info(
        "inbound %s sid=%s patient=%s kind=%s attention=%s",
        inbound.id,
        provider_sid,
        patient_id if patient_id is not None else "unknown",
        inbound.kind,
        inbound.needs_attention,
    )
    return InboundResult(inbound, duplicate=False, reply=_reply_text(session, inbound, care))


def _inbound_by_sid(session: so.Session, provider_sid: str) -> InboundMessage | None:
    return session.scalar(
        sa.select(InboundMessage).where(InboundMessage.provider_sid == provider_sid)
    )


def _last_texted_patient(session: so.Session, ids: list[int]) -> int:
    """Of the patients sharing a number, the one texted last (else the newest)."""
    texted = session.scalar(
        sa.select(Message.patient_id)
        .where(Message.patient_id.in_(ids), Message.sent_at.is_not(None))
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
    )
    return texted if texted is not None else max(ids)


def _reply_text(session: so.Session, inbound: InboundMessage, care: CareContext) -> str | None:
    if inbound.kind != REPLY_HELP:
        return None
    patient = session.get(Patient, inbound.patient_id) if inbound.patient_id else None
    template = HELP_TEXT.get(patient.language if patient else "en", HELP_TEXT["en"])
    return template.format(clinic_name=care.clinic_name, clinic_phone=care.clinic_phone)

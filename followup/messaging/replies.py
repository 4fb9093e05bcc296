"""Replies: store each inbound text once, triage it, act on keywords, answer it.

Every reply that is not a keyword gets at most one automatic answer, in TwiML, in the
patient's language, chosen by its triage (followup.messaging.triage matches the words
of followup.messaging.triage_words):

- urgent (a warning sign, a pain score of 7 or more): told to call the clinic now and the
  emergency number in an emergency; answered every time;
- needs reading (a question, anything not understood): told a nurse will read it and
  when (the clinic's staffed hours); at most once per patient per READING_ANSWER_EVERY;
- a pain score below 7: thanked, with what to watch for;
- closing ("thanks", "ok", an emoji): recorded, not queued, not answered.

Keywords: STOP (and Twilio's other opt-out words) and START as Twilio handles them; HELP
and AYUDA answered with the clinic's phone; PARAR, ALTO and CANCELAR opt out like STOP and
are confirmed here, since the carrier does not know them as opt-out words.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import ClinicHours, zone
from followup.db import advisory_key, is_postgresql
from followup.messaging import pain_scores
from followup.messaging import triage as words
from followup.messaging.hours import when_read
from followup.messaging.models import (
    REPLY_CLOSING,
    REPLY_HELP,
    REPLY_OTHER,
    REPLY_PAIN,
    REPLY_START,
    REPLY_STOP,
    REPLY_SYMPTOM,
    TRIAGE_CLOSING,
    TRIAGE_KEYWORD,
    TRIAGE_READING,
    TRIAGE_RECORDED,
    TRIAGE_URGENT,
    InboundMessage,
    Message,
)
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import OPTED_OUT, locked_patient, record_opt_out
from followup.patients.models import Patient
from followup.patients.service import lock_phones

log = logging.getLogger(__name__)

# Keywords: the whole reply, any case, accents and surrounding spaces ignored.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
# Spanish opt-out words: the carrier does not treat them as STOP, so we confirm them.
SPANISH_STOP_WORDS = frozenset({"PARAR", "ALTO", "CANCELAR"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP"})
SPANISH_HELP_WORDS = frozenset({"AYUDA"})
# Twilio's Advanced Opt-Out names what it did with a reply in the OptOutType field.
OPT_OUT_TYPES = {"STOP": REPLY_STOP, "START": REPLY_START, "HELP": REPLY_HELP}
PAIN_ALERT = 7  # a pain score at or above this is urgent
PAIN_CHECK_STEP = "pain-check"
# The advisory lock's class for a number on no file while its reply's answer is decided
# (messaging.claims holds 0x46550001, patients.service 0x46550002).
UNKNOWN_SENDER_LOCK = 0x46550003
READING_ANSWER_EVERY = timedelta(hours=12)  # "a nurse will read it": once per patient per 12 h

# The automatic answers, per kind and language. Placeholders: clinic_name, clinic_phone,
# emergency_number; `reading` also has when and hours, `pain` has score.
ANSWER_URGENT = "urgent"
ANSWER_READING = "reading"
ANSWER_PAIN = "pain"
ANSWER_HELP = "help"
ANSWER_OPT_OUT = "opt-out"
ANSWERS: dict[str, dict[str, str]] = {
    ANSWER_URGENT: {
        "en": "{clinic_name}: Please call us now at {clinic_phone} about what you describe. "
        "If it is an emergency, call {emergency_number} now. Texts are not read right away.",
        "es": "{clinic_name}: Llámenos ahora al {clinic_phone} por lo que describe. Si es "
        "una emergencia, llame al {emergency_number} ahora. Los mensajes no se leen de "
        "inmediato.",
    },
    ANSWER_READING: {
        "en": "{clinic_name}: Thank you. A nurse will read your message {when}. Nurses read "
        "messages {hours}. If it is urgent, call {clinic_phone}; in an emergency call "
        "{emergency_number}.",
        "es": "{clinic_name}: Gracias. Una enfermera leerá su mensaje {when}. Las enfermeras "
        "leen los mensajes {hours}. Si es urgente, llame al {clinic_phone}; en una "
        "emergencia llame al {emergency_number}.",
    },
    ANSWER_PAIN: {
        "en": "{clinic_name}: Thank you, we recorded your pain score of {score} of 10. If "
        "the pain gets worse, or you have fever, redness, bleeding, new numbness or "
        "weakness, call {clinic_phone}. In an emergency call {emergency_number}.",
        "es": "{clinic_name}: Gracias, anotamos su dolor: {score} de 10. Si el dolor "
        "empeora, o tiene fiebre, enrojecimiento, sangrado, adormecimiento o debilidad "
        "nuevos, llame al {clinic_phone}. En una emergencia llame al {emergency_number}.",
    },
    ANSWER_HELP: {
        "en": "{clinic_name}: aftercare texts after your procedure. Questions? Call "
        "{clinic_phone}. In an emergency call {emergency_number}. Reply STOP to end these "
        "texts.",
        "es": "{clinic_name}: mensajes de cuidados después de su procedimiento. ¿Preguntas? "
        "Llame al {clinic_phone}. En una emergencia llame al {emergency_number}. Responda "
        "STOP para no recibir más.",
    },
    ANSWER_OPT_OUT: {
        "en": "{clinic_name}: You will get no more follow-up texts. Reply START to get them "
        "again. In an emergency call {emergency_number}.",
        "es": "{clinic_name}: No recibirá más mensajes de seguimiento. Para volver a "
        "recibirlos, responda START. En una emergencia llame al {emergency_number}.",
    },
}
HELP_TEXT = ANSWERS[ANSWER_HELP]


@dataclass(frozen=True)
class Classified:
    """What a reply means and what it needs from people."""

    kind: str  # REPLY_*: what it was taken to be
    triage: str = TRIAGE_READING  # TRIAGE_*: what it needs
    reason: str | None = None  # why, in words for the nurse (never the reply's own words)
    pain_score: int | None = None
    language: str | None = None  # the language of its words, when they tell
    confirm_opt_out: bool = False  # an opt-out word the carrier does not confirm itself

    @property
    def needs_attention(self) -> bool:
        """Urgent and needs-reading replies go to the nurses' queue."""
        return self.triage in (TRIAGE_URGENT, TRIAGE_READING)


@dataclass(frozen=True)
class InboundResult:
    inbound: InboundMessage
    duplicate: bool  # the provider retried a webhook we had already stored
    reply: str | None  # the automatic answer, or None


def _keyword(body: str) -> str:
    plain = unicodedata.normalize("NFKD", body.strip().upper())
    return "".join(c for c in plain if not unicodedata.combining(c))


def classify_reply(
    body: str, *, opt_out_type: str | None, pain_check_sent: bool, media_count: int = 0
) -> Classified:
    """Say what a reply means: a keyword, a warning sign, a pain score, a closing, or else
    something a nurse must read.

    Keywords are exact (any case, surrounding whitespace ignored); Twilio's OptOutType, when
    present, wins. A bare number 0-10 is a pain score only after a pain check was sent; a
    score stated in words ("my pain is 8") counts at any time. Warning signs win over
    everything but keywords, unless negated ("no fever").
    """
    forced = OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())
    if forced is not None:
        return Classified(forced, TRIAGE_KEYWORD, f"keyword ({forced.upper()})")
    keyword = _keyword(body)
    if keyword in STOP_WORDS:
        return Classified(REPLY_STOP, TRIAGE_KEYWORD, "keyword (STOP)")
    if keyword in SPANISH_STOP_WORDS:
        return Classified(
            REPLY_STOP, TRIAGE_KEYWORD, "keyword (STOP)", language="es", confirm_opt_out=True
        )
    if keyword in START_WORDS:
        return Classified(REPLY_START, TRIAGE_KEYWORD, "keyword (START)")
    if keyword in HELP_WORDS:
        return Classified(REPLY_HELP, TRIAGE_KEYWORD, "keyword (HELP)")
    if keyword in SPANISH_HELP_WORDS:
        return Classified(REPLY_HELP, TRIAGE_KEYWORD, "keyword (HELP)", language="es")

    language = "es" if words.spanish_words(body) else None
    signs = words.find_warning_signs(body)
    present = [s for s in signs if not s.negated]
    score = pain_scores.pain_in_words(body)
    if score is None and pain_check_sent:
        score = pain_scores.bare_score(body)
    stored_score = score if score is not None and 0 <= score <= 10 else None
    reasons = [s.rule.reason for s in present]
    if score is not None and score >= PAIN_ALERT:
        reasons.insert(0, f"pain score {score} of 10")
    elif score is None:
        unplaced = pain_scores.unplaced_high_number(body, floor=PAIN_ALERT)
        if unplaced is not None:
            reasons.insert(0, f"speaks of pain and names {unplaced}: a pain score of {unplaced}?")
    elif doing := pain_scores.higher_numbers(body, score=score, floor=PAIN_ALERT, doing=True):
        # "pain 4 at rest, 8 walking": the pain reaches 8 when they move.
        reasons.insert(0, f"pain score {score} of 10, {max(doing)} when doing something")
    if reasons:
        kind = REPLY_PAIN if not present else REPLY_SYMPTOM
        return Classified(kind, TRIAGE_URGENT, "; ".join(reasons), stored_score, language)

    question = words.is_question(body)
    negated = sorted({s.rule.reason for s in signs})
    passed_over = (
        pain_scores.higher_numbers(body, score=stored_score, floor=PAIN_ALERT)
        if stored_score is not None
        else []
    )
    if (
        stored_score is not None
        and not question
        and not negated
        and not media_count
        and not passed_over
    ):
        return Classified(
            REPLY_PAIN, TRIAGE_RECORDED, f"pain score {stored_score} of 10", stored_score, language
        )
    if not media_count and not negated and words.is_closing(body):
        return Classified(REPLY_CLOSING, TRIAGE_CLOSING, "closing (thanks, ok)", None, language)
    why: list[str] = []
    if stored_score is not None:
        why.append(f"pain score {stored_score} of 10")
    if passed_over:
        why.append(f"also names {max(passed_over)}: is that the pain now?")
    if media_count:
        why.append("sent a picture or file")
    if negated:
        why.append("mentions " + ", ".join(negated) + " (says not)")
    if words.says_worse(body):
        why.append("says something is worse")
    if question:
        why.append("a question")
    if not body.strip() and not media_count:
        why.append("an empty message")
    if not why:
        why.append("not understood automatically")
    return Classified(REPLY_OTHER, TRIAGE_READING, "; ".join(why), stored_score, language)


# --- storing and answering ----------------------------------------------------------------


def record_inbound(
    *,
    session: so.Session,
    provider_sid: str,
    from_phone: str,
    body: str,
    opt_out_type: str | None,
    care: CareContext,
    clinic_hours: ClinicHours,
    clinic_zone: str,
    now: datetime,
    media_count: int = 0,
) -> InboundResult:
    """Store one reply, once per provider SID, triage it, act on it and answer it; the
    caller commits.

    STOP opts out every patient with that number and cancels their pending texts; START
    opts them back in. A sender who matches no patient is stored and flagged. Call it first
    in its transaction: a duplicate SID rolls the session back.
    """
    existing = _inbound_by_sid(session, provider_sid)
    if existing is not None:
        return InboundResult(
            existing, duplicate=True, reply=_stored_answer(session, existing, care)
        )
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
        body,
        opt_out_type=opt_out_type,
        pain_check_sent=pain_check_patient is not None,
        media_count=media_count,
    )
    patient_id = (
        pain_check_patient
        if classified.kind == REPLY_PAIN and pain_check_patient is not None
        else _last_texted_patient(session, ids)
        if ids
        else None
    )
    patient = next((p for p in patients if p.id == patient_id), None)
    language = patient.language if patient is not None else classified.language or "en"
    answer_kind = _answer_kind(session, classified, patient_id, from_phone, now, bool(patients))
    answer = (
        _answer_text(
            answer_kind,
            language=language,
            care=care,
            classified=classified,
            clinic_hours=clinic_hours,
            clinic_zone=clinic_zone,
            patient_zone=patient.timezone if patient is not None else clinic_zone,
            now=now,
        )
        if answer_kind is not None
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
        triage=classified.triage,
        triage_reason=(classified.reason or "")[:200] or None,
        answers_message_id=_answered_text(session, patient_id, now),
        answer_kind=answer_kind,
        answer_body=answer,
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
        return InboundResult(stored, duplicate=True, reply=_stored_answer(session, stored, care))
    if answer_kind == ANSWER_READING:
        # Two questions a second apart: each request read "not answered lately" before the
        # other's reply was stored. Decided again under the patient's row lock (a number on
        # no file: a lock on the number; SQLite: the write lock the flush took), the later
        # one sees the first's and stays unanswered.
        if patient_id is not None:
            locked_patient(session, patient_id)
        elif is_postgresql(session):
            key = advisory_key(from_phone[:32])
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(UNKNOWN_SENDER_LOCK, key)))
        if _answered_lately(session, patient_id, from_phone, now, other_than=inbound.id):
            inbound.answer_kind = inbound.answer_body = answer = answer_kind = None
    if classified.kind in (REPLY_STOP, REPLY_START):
        # An enrollment of this number under way (a nurse's, an import's) holds the phone's
        # lock until it commits: waited for and read again, its new patient is opted out
        # (or in) with the rest, not left out to be texted after the STOP.
        lock_phones(session=session, phones=[from_phone])
        patients = list(
            session.scalars(
                sa.select(Patient)
                .where(Patient.phone == from_phone)
                .order_by(Patient.id)
                .execution_options(populate_existing=True)
            )
        )
    if classified.kind in (REPLY_STOP, REPLY_START) and _overtaken(session, inbound, patients):
        # Changes nothing, and confirms nothing (our own Spanish opt-out answer).
        log.info("inbound %s: a later reply of the patient's came first; kept", inbound.id)
        inbound.answer_kind = inbound.answer_body = answer = answer_kind = None
        patients = []
    for each in patients:
        if classified.kind == REPLY_STOP:
            record_opt_out(
                session=session,
                patient_id=each.id,
                now=now,
                reason=f"patient replied STOP: {OPTED_OUT}",
            )
        elif classified.kind == REPLY_START:
            record_opt_in(session=session, patient_id=each.id, care=care, now=now)
    log.info(
        "inbound %s sid=%s patient=%s kind=%s triage=%s attention=%s answer=%s",
        inbound.id,
        provider_sid,
        patient_id if patient_id is not None else "unknown",
        inbound.kind,
        inbound.triage,
        inbound.needs_attention,
        answer_kind or "none",
    )
    return InboundResult(inbound, duplicate=False, reply=answer)


def _overtaken(session: so.Session, inbound: InboundMessage, patients: Sequence[Patient]) -> bool:
    """A STOP or START from this number received after `inbound` (of the other kind) is
    already recorded: their requests overlapped and the later one was handled first. The
    patient's last word stands, as at Twilio. Read under the patients' row locks, which STOP
    and START both take first (`locked_patient`): whichever comes second sees the other."""
    if not patients:
        return False
    for patient in sorted(patients, key=lambda p: p.id):
        locked_patient(session, patient.id)
    other = REPLY_START if inbound.kind == REPLY_STOP else REPLY_STOP
    return (
        session.scalar(
            sa.select(InboundMessage.id)
            .where(
                InboundMessage.from_phone == inbound.from_phone,
                InboundMessage.kind == other,
                InboundMessage.received_at > inbound.received_at,
            )
            .limit(1)
        )
        is not None
    )


def _answer_kind(
    session: so.Session,
    classified: Classified,
    patient_id: int | None,
    from_phone: str,
    now: datetime,
    known: bool,
) -> str | None:
    """Which automatic answer a reply gets, if any."""
    if classified.kind == REPLY_HELP:
        return ANSWER_HELP
    if classified.kind == REPLY_STOP:
        return ANSWER_OPT_OUT if classified.confirm_opt_out and known else None
    if classified.triage == TRIAGE_KEYWORD or classified.triage == TRIAGE_CLOSING:
        return None
    if classified.triage == TRIAGE_URGENT:
        return ANSWER_URGENT
    if classified.triage == TRIAGE_RECORDED:
        return ANSWER_PAIN
    return None if _answered_lately(session, patient_id, from_phone, now) else ANSWER_READING


def _answered_lately(
    session: so.Session,
    patient_id: int | None,
    from_phone: str,
    now: datetime,
    other_than: int | None = None,
) -> bool:
    """Whether the sender got the reading answer within READING_ANSWER_EVERY (a reply of
    theirs other than `other_than` carries it)."""
    sender = (
        InboundMessage.patient_id == patient_id
        if patient_id is not None
        else InboundMessage.from_phone == from_phone[:32]
    )
    query = sa.select(InboundMessage.id).where(
        sender,
        InboundMessage.answer_kind == ANSWER_READING,
        InboundMessage.received_at > now - READING_ANSWER_EVERY,
    )
    if other_than is not None:
        query = query.where(InboundMessage.id != other_than)
    return session.scalar(query.limit(1)) is not None


def _answer_text(
    kind: str,
    *,
    language: str,
    care: CareContext,
    classified: Classified,
    clinic_hours: ClinicHours,
    clinic_zone: str,
    patient_zone: str,
    now: datetime,
) -> str:
    templates = ANSWERS[kind]
    template = templates.get(language, templates["en"])
    values = {
        "clinic_name": care.clinic_name,
        "clinic_phone": care.clinic_phone,
        "emergency_number": care.emergency_number,
        "score": str(classified.pain_score),
    }
    if kind == ANSWER_READING:
        tz = zone(clinic_zone)
        when, hours = when_read(clinic_hours, now, tz, language, zone(patient_zone))
        if patient_zone != clinic_zone:
            hours += f" ({now.astimezone(tz).tzname()})"
        values.update(when=when, hours=hours)
    return template.format_map(values)


def _answered_text(session: so.Session, patient_id: int | None, now: datetime) -> int | None:
    """The text a reply answers: the last one sent to the patient before it."""
    if patient_id is None:
        return None
    return session.scalar(
        sa.select(Message.id)
        .where(Message.patient_id == patient_id, Message.sent_at <= now)
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
    )


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


def _stored_answer(session: so.Session, inbound: InboundMessage, care: CareContext) -> str | None:
    """The answer a stored reply got (a retried webhook is answered the same way)."""
    if inbound.answer_body is not None or inbound.kind != REPLY_HELP:
        return inbound.answer_body
    # A HELP stored before answers were kept on the row.
    patient = session.get(Patient, inbound.patient_id) if inbound.patient_id else None
    template = HELP_TEXT.get(patient.language if patient else "en", HELP_TEXT["en"])
    return template.format(
        clinic_name=care.clinic_name,
        clinic_phone=care.clinic_phone,
        emergency_number=care.emergency_number,
    )


__all__ = [
    "ANSWERS",
    "Classified",
    "InboundResult",
    "REPLY_CLOSING",
    "REPLY_OTHER",
    "classify_reply",
    "record_inbound",
]

"""A whole booked journey, as the patient's phone receives it through the fake Twilio, for a
patient in the clinic's zone (New York) and patients in others: Phoenix (no DST), Honolulu, and Puerto
Rico (no DST, in Spanish), across the night US clocks fall back (2026-11-01).

Enrolled on Tuesday, October 27 at 15:00 their time, booked for Monday, November 2 at 9:00
with warfarin stopped on Friday, October 30; the nurse records it finished at 10:30 (at
10:40). The dispatcher runs every half hour. Each text arrives once, at its local time
(never inside quiet hours, never the restart before 48 h), and names the local date and
time the patient lives by, whatever the clinic's clock did that week."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.edits import complete_procedure
from followup.patients.validation import EnrollmentResult
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import PHONE
from tests.messaging.helpers import dispatch

Enroll = Callable[..., EnrollmentResult]
STEP = timedelta(minutes=30)
ENGLISH = [
    ("Tue 10-27 15:00", "Welcome to Recovery Texts. You will get about 8 texts"),
    ("Thu 10-29 10:00", "Stop taking your warfarin on Friday, October 30,"),
    ("Sun 11-01 16:00", "Your procedure is at 9:00 AM on Monday, November 2."),
    ("Mon 11-02 11:00", "You had sedation today"),
    ("Tue 11-03 10:00", "The spot where the needle went in may be sore"),
    ("Wed 11-04 10:30", "You may restart your warfarin from 10:30 AM on Wednesday, November 4."),
    ("Thu 11-05 10:00", "Your soreness should be easing."),
    ("Mon 11-09 10:00", "How is your back pain today?"),
]
SPANISH = [
    ("Tue 10-27 15:00", "Le damos la bienvenida a Mensajes de Recuperación. Recibirá unos 8"),
    ("Thu 10-29 10:00", "Deje de tomar su warfarin el viernes 30 de octubre,"),
    ("Sun 11-01 16:00", "Su cita: las 9:00 a. m. del lunes 2 de noviembre."),
    ("Mon 11-02 11:00", "Hoy recibió sedación"),
    ("Tue 11-03 10:00", "Es normal tener dolor donde entró la aguja"),
    ("Wed 11-04 10:30", "Puede volver a tomar su warfarin desde las 10:30 a. m. del miércoles 4"),
    ("Thu 11-05 10:00", "Su dolor debería estar mejorando."),
    ("Mon 11-09 10:00", "¿Cómo está su dolor de espalda hoy?"),
]


def _local(text: str, tz: ZoneInfo) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


@pytest.mark.parametrize(
    ("timezone", "language", "expected"),
    [
        ("America/New_York", "en", ENGLISH),  # the clinic's own zone, clocks falling back
        ("America/Phoenix", "en", ENGLISH),
        ("Pacific/Honolulu", "en", ENGLISH),
        ("America/Puerto_Rico", "es", SPANISH),
    ],
)
def test_a_booked_patient_in_another_zone_gets_each_text_once_at_local_time(
    timezone: str,
    language: str,
    expected: list[tuple[str, str]],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    tz = ZoneInfo(timezone)
    clock.set(_local("2026-10-27T15:00", tz))
    result = enroll(
        completed_at="", scheduled_at="2026-11-02T09:00", blood_thinner="warfarin",
        stop_blood_thinner_on="2026-10-30", timezone=timezone, language=language,
    )  # fmt: skip
    finished, end = _local("2026-11-02T10:40", tz), _local("2026-11-10T12:00", tz)
    while clock.now() <= end:
        dispatch(session, twilio_transport, care, clock.now())
        if clock.now() < finished <= clock.now() + STEP:
            clock.set(finished)
            complete_procedure(
                session=session, patient_id=result.patient.id,
                procedure_id=result.procedure.id, completed_at="2026-11-02T10:30", care=care,
                now=clock.now(), actor="nurse@example.org",
            )  # fmt: skip
            session.commit()
            clock.set(_local("2026-11-02T11:00", tz) - STEP)
        clock.advance(STEP)

    received = sorted(twilio_fake.messages.values(), key=lambda m: m["_created"])
    assert {m["to"] for m in received} == {PHONE}
    got = [(f"{m['_created'].astimezone(tz):%a %m-%d %H:%M}", m["body"]) for m in received]
    assert [when for when, _ in got] == [when for when, _ in expected], got
    for (when, body), (_, words) in zip(got, expected, strict=True):
        assert body.startswith("Riverside Spine Center") and words in body, (when, body)

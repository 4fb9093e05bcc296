"""The text that introduces the program (HELP, STOP, "Msg & data rates may apply") whose
copy Twilio failed with 30001 when no retry fits expires without its SID: the patient got
nothing, so the next text they receive carries the introduction (927be94). That holds only
when the copy went out at the first answer. When the hand-over's answer was lost (a 500
after Twilio created the message: outcome unknown) and the reaper then found that very
copy at Twilio and recorded it, the same 30001 report expires the text the same way, but
its history still says "a request of it may be at the provider" (the outcome-unknown
event, which the reaper's find does not settle): `replan_lost_intros` and `decide_replan`
count the introduction as given, and the patient's next texts never carry HELP, STOP or
the rates. Twilio's 500s and its queue overflowing come on the same bad evening."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import EXPIRED, SENDING, SENT
from followup.messaging.tick import run_tick
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import post_signed
from tests.messaging.helpers import at, event_kinds, messages

HELP = "Reply HELP for help or STOP to end them."
PHONE = "+12025550143"


def _report(client: FlaskClient, runtime: Runtime, sid: str, status: str, code: int) -> None:
    form = {
        "AccountSid": "AC" + "f" * 32,
        "MessageSid": sid,
        "MessageStatus": status,
        "ErrorCode": str(code),
        "To": PHONE,
    }
    token = runtime.settings.twilio_auth_token or ""
    assert post_signed(client, "/twilio/status", form, token=token)[0] == 200


def _tick(
    session: so.Session, transport: TwilioTransport, care: CareContext, clock: FakeClock
) -> None:
    run_tick(session=session, transport=transport, care=care, clock=clock, owner="test")
    session.commit()


def test_an_intro_found_by_the_reaper_then_failed_30001_leaves_the_intro_to_the_next_text(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    twilio_runtime: Runtime,
    client: FlaskClient,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # Finished at 20:00, enrolled at 20:40: no-driving (the intro) is due now, until 21:00.
    clock.set(at("2026-03-06T20:40"))
    result = enroll(completed_at="2026-03-06T20:00")
    assert result.procedure.intro_step == "no-driving"
    # Twilio creates the message but answers 500: the outcome is unknown.
    twilio_fake.fail_after_accept = 1
    _tick(session, twilio_transport, care, clock)
    text = messages(session)["no-driving"]
    assert text.status == SENDING
    assert "outcome-unknown" in event_kinds(session, text.id)
    [sid] = list(twilio_fake.messages)

    # The reaper asks at the retry time and finds that copy: recorded sent with its SID.
    for _ in range(30):
        clock.advance(timedelta(seconds=20))
        _tick(session, twilio_transport, care, clock)
        if messages(session)["no-driving"].status != SENDING:
            break
    text = messages(session)["no-driving"]
    assert (text.status, text.provider_sid) == (SENT, sid)
    assert len(twilio_fake.creates()) == 1

    # Twilio's queue overflowed: that copy is reported failed with 30001 just before 21:00,
    # when no retry fits. The patient got nothing: the text expires without the SID.
    clock.set(text.expires_at - timedelta(seconds=3))
    _report(client, twilio_runtime, sid, "failed", 30001)
    text = messages(session)["no-driving"]
    assert (text.status, text.error_code, text.provider_sid) == (EXPIRED, "30001", None)
    reached_twilio_so_far = len(twilio_fake.creates())

    # The planner runs every minute through the night; soreness goes on day 1 at 10:00.
    for local in ("2026-03-06T21:01", "2026-03-06T21:02", "2026-03-07T08:00"):
        clock.set(at(local))
        _tick(session, twilio_transport, care, clock)
    clock.set(at("2026-03-07T10:00"))
    _tick(session, twilio_transport, care, clock)

    morning = twilio_fake.creates()[reached_twilio_so_far:]
    assert morning, "nothing went out the next morning"
    session.refresh(result.procedure)
    assert any(HELP in c["Body"] for c in morning), (
        "the patient never received the introduction (HELP, STOP, rates): no-driving's only "
        "copy failed with 30001 and expired, but its earlier 'outcome unknown' still counts "
        f"as 'may have reached the patient' (intro_step {result.procedure.intro_step!r}); "
        f"the first text the patient received: {morning[0]['Body']!r}"
    )

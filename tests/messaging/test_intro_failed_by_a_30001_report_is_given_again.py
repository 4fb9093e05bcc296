"""The first text a patient receives introduces the program (README: HELP, STOP, "Msg & data
rates may apply", how many texts to expect). The no-driving text carries that introduction
for a procedure already done. When Twilio's queue overflows (30001: "the patient got
nothing", retried until the window closes), the last copy's 30001 report comes when no try
fits any more and the text expired with that reason. The patient never got the introduction, so the next text
they receive must carry it (as it does when the same overflow is refused at the create:
the text expires and the planner gives the introduction to the welcome)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import EXPIRED, SENT
from followup.messaging.tick import run_tick
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import post_signed
from tests.messaging.helpers import at, messages

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


def test_an_intro_text_failed_by_a_30001_report_leaves_the_intro_to_the_next_text(
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
    _tick(session, twilio_transport, care, clock)

    # Twilio's queue overflows all evening: every copy is reported failed with 30001 a
    # minute after it went; each is retried while a try fits before 21:00.
    for _ in range(40):
        text = messages(session)["no-driving"]
        if text.status != SENT:
            break
        assert text.provider_sid is not None
        clock.set(min(clock.now() + timedelta(minutes=1), text.expires_at - timedelta(seconds=3)))
        _report(client, twilio_runtime, text.provider_sid, "failed", 30001)
        text = messages(session)["no-driving"]
        if text.status == EXPIRED:
            break
        assert text.not_before is not None
        clock.set(max(clock.now(), text.not_before))
        _tick(session, twilio_transport, care, clock)
    no_driving = messages(session)["no-driving"]
    # The patient got nothing: expired with the reason, as the same refusal at the create.
    assert (no_driving.status, no_driving.error_code) == (EXPIRED, "30001")
    assert no_driving.provider_sid is None
    assert all(c["To"] == PHONE for c in twilio_fake.creates())
    reached_twilio_so_far = len(twilio_fake.creates())

    # The planner runs every minute through the night; soreness goes on day 1 at 10:00.
    for local in ("2026-03-06T21:01", "2026-03-06T21:02", "2026-03-07T08:00"):
        clock.set(at(local))
        _tick(session, twilio_transport, care, clock)
    clock.set(at("2026-03-07T10:00"))
    _tick(session, twilio_transport, care, clock)

    # Twilio's queue is fine again: the patient receives the next texts. The first of them
    # must introduce the program: nothing the patient received so far did.
    morning = twilio_fake.creates()[reached_twilio_so_far:]
    assert morning, "nothing went out the next morning"
    session.refresh(result.procedure)
    assert any(HELP in c["Body"] for c in morning), (
        "the patient never received the introduction (HELP, STOP, rates): no-driving failed "
        f"with 30001 and the intro stayed with it (intro_step {result.procedure.intro_step!r}); "
        f"the first text the patient received: {morning[0]['Body']!r}"
    )

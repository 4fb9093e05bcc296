"""Alerts stop once a nurse handles the reply, within a run too.

An alerts run reads the open urgent replies once, then alerts one person after another,
each a request to Twilio or the mail server (seconds each: SMTP waits up to 10 s for every
answer). A nurse who handles the reply while the run is talking to Twilio about the on-call
SMS has done what the alert asks: the escalation phone (the charge nurse, the physician on
call) must not then be paged "Still unhandled after 15 min" about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.inbox.alerts import AlertSettings, run_alerts
from followup.inbox.service import mark_handled
from followup.messaging.transports.base import OutgoingSms, SendResult
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.transport import ScriptedTransport
from tests.inbox.conftest import ESCALATION, ONCALL

Enroll = Callable[..., EnrollmentResult]


def test_no_escalation_page_for_a_reply_a_nurse_handled_while_the_run_was_sending(
    urgent_reply: int,
    twilio_runtime: Runtime,
    session_factory: so.sessionmaker[so.Session],
    clock: FakeClock,
) -> None:
    settings = replace(AlertSettings.from_settings(twilio_runtime.settings), emails=())
    handled: list[str] = []

    class NurseHandlesMeanwhile(ScriptedTransport):
        """Twilio takes a while with the on-call escalation SMS; the nurse, off the phone
        with the patient, handles the item meanwhile."""

        def send(self, sms: OutgoingSms) -> SendResult:
            if sms.to == ONCALL and sms.body.startswith("Still unhandled") and not handled:
                with session_factory() as nurse:
                    mark_handled(
                        session=nurse, kind="reply", item_id=urgent_reply,
                        note="Called her: numbness known, seen this morning",
                        actor="nurse@example.org", now=clock.now(),
                    )  # fmt: skip
                    nurse.commit()
                handled.append(sms.to)
            return super().send(sms)

    transport = NurseHandlesMeanwhile()

    def run() -> None:
        with session_factory() as own:
            run_alerts(
                session=own, settings=settings, sms=transport, mailer=None,
                now=clock.now(), owner="worker-1",
            )  # fmt: skip

    run()  # the first alert, to on-call
    clock.advance(timedelta(minutes=15))
    run()  # the escalation: on-call first, then the escalation phone
    assert handled == [ONCALL]
    to_escalation = [sms.body for sms in transport.sent if sms.to == ESCALATION]
    assert to_escalation == [], (
        f"the escalation phone was paged {to_escalation!r} about a reply a nurse had "
        "already handled during the run"
    )

"""An urgent reply's first alerts go to ONCALL_PHONE and ALERT_EMAIL; the escalation (to
ESCALATION_PHONE too) waits ESCALATE_AFTER_MINUTES. When every first alert failed for good
(Twilio refused the on-call number, the mail server refused the address), nobody was
reached, yet the escalation still waited its 15 minutes: a patient with new numbness sat
unseen a quarter of an hour with the one person who could be reached never told."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.inbox.models import StaffAlert
from followup.runtime import Runtime
from jobs import tasks
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.inbox.conftest import ALERT, ALERT_EMAIL, ESCALATION, ONCALL, SmtpServer, sms_to

REFUSED = FakeError(21211, message="The 'To' number is not a valid phone number.")


def test_when_every_first_alert_failed_the_escalation_goes_at_once(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
    session: so.Session,
    clock: FakeClock,
) -> None:
    twilio_fake.errors[ONCALL] = REFUSED
    smtp_server.sink.refuse.add(ALERT_EMAIL)
    report = tasks.alerts(twilio_runtime)
    assert report.failed == 2
    clock.advance(timedelta(seconds=15))  # the alerts job's next run
    report = tasks.alerts(twilio_runtime)
    early = f"Still unhandled, the first alert could not be sent: {ALERT}"
    assert sms_to(twilio_fake, ESCALATION) == [early]
    escalations = session.scalars(
        sa.select(StaffAlert.recipient).where(StaffAlert.round == 1).order_by(StaffAlert.id)
    ).all()
    assert sorted(escalations) == sorted([ONCALL, ESCALATION, ALERT_EMAIL])
    clock.advance(timedelta(minutes=20))
    assert tasks.alerts(twilio_runtime).claimed == 0  # still one escalation


def test_when_one_first_alert_went_the_escalation_waits_its_minutes(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
    session: so.Session,
    clock: FakeClock,
) -> None:
    twilio_fake.errors[ONCALL] = REFUSED
    tasks.alerts(twilio_runtime)  # the e-mail went
    clock.advance(timedelta(minutes=14))
    assert tasks.alerts(twilio_runtime).claimed == 0
    assert sms_to(twilio_fake, ESCALATION) == []
    clock.advance(timedelta(minutes=1))
    tasks.alerts(twilio_runtime)
    assert sms_to(twilio_fake, ESCALATION) == [f"Still unhandled after 15 min: {ALERT}"]

"""An urgent reply's first alerts go to ONCALL_PHONE and ALERT_EMAIL; the escalation (to
ESCALATION_PHONE too) waits ESCALATE_AFTER_MINUTES. When every first alert failed for good
(Twilio refused the on-call number, the mail server refused the address), nobody was
reached, yet the escalation still waited its 15 minutes: a patient with new numbness sat
unseen a quarter of an hour with the one person who could be reached never told."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.clock import FakeClock
from followup.inbox.alerts import AlertSettings, run_alerts
from followup.inbox.models import StaffAlert
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from jobs import tasks
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.inbox.conftest import (
    ALERT,
    ALERT_EMAIL,
    ESCALATION,
    ONCALL,
    SmtpServer,
    alert_rows,
    sms_to,
)
from tests.messaging.conftest import post_signed, reply_form

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


def test_the_escalation_phone_is_not_paged_while_the_first_email_is_still_to_go(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
    session: so.Session,
) -> None:
    """Two processes run the alerts: one saw Twilio refuse the on-call number and has not
    claimed the e-mail yet (modelled by its run without a mailer) when the other starts.
    The other took the failed SMS for every first alert: it paged the escalation phone
    "the first alert could not be sent" and e-mailed the same, as the e-mail's first alert."""
    twilio_fake.errors[ONCALL] = REFUSED
    settings = AlertSettings.from_settings(twilio_runtime.settings)
    run_alerts(
        session=session, settings=settings, sms=twilio_runtime.transport, mailer=None,
        now=twilio_runtime.clock.now(), owner="first",
    )  # fmt: skip
    tasks.alerts(twilio_runtime)
    assert sms_to(twilio_fake, ESCALATION) == []
    assert [body.splitlines()[0] for body in smtp_server.bodies()] == [ALERT]
    assert alert_rows(session) == [(0, "sms", ONCALL, "failed"), (0, "email", ALERT_EMAIL, "sent")]


def test_an_escalation_brought_forward_says_so_beside_an_older_reply_already_escalated(
    urgent_reply: int,
    client: FlaskClient,
    enroll: Callable[..., EnrollmentResult],
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    """Ada's reply escalated after its 15 minutes; then Ben's first alerts all failed. The
    escalation phone, paged at once for Ben, was told "Still unhandled after 15 min": the
    wording was chosen by every reply due an escalation, Ada's too, though hers had gone."""
    tasks.alerts(twilio_runtime)
    clock.advance(timedelta(minutes=16))
    tasks.alerts(twilio_runtime)
    assert sms_to(twilio_fake, ESCALATION) == [f"Still unhandled after 15 min: {ALERT}"]
    enroll(first_name="Ben", last_name="Okafor", phone="(202) 555-0144")
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = reply_form("I have a fever", sender="+12025550144")
    assert post_signed(client, "/twilio/inbound", form, token=token)[0] == 200
    twilio_fake.errors[ONCALL] = REFUSED
    smtp_server.sink.refuse.add(ALERT_EMAIL)
    assert tasks.alerts(twilio_runtime).failed == 2
    clock.advance(timedelta(seconds=15))
    tasks.alerts(twilio_runtime)
    both = ALERT.replace("1 urgent reply", "2 urgent replies")
    assert sms_to(twilio_fake, ESCALATION)[1:] == [
        f"Still unhandled, the first alert could not be sent: {both}"
    ]


def test_an_alert_sms_reported_undelivered_after_sent_brings_the_escalation_forward_once(
    urgent_reply: int,
    client: FlaskClient,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
    session: so.Session,
    clock: FakeClock,
) -> None:
    smtp_server.sink.refuse.add(ALERT_EMAIL)
    tasks.alerts(twilio_runtime)
    clock.advance(timedelta(seconds=15))
    assert tasks.alerts(twilio_runtime).claimed == 0  # the SMS went: nobody failed yet
    sid = session.scalars(sa.select(StaffAlert.provider_sid).where(StaffAlert.round == 0)).all()
    token = twilio_runtime.settings.twilio_auth_token or ""
    for status in ("sent", "undelivered"):
        form = {"MessageSid": next(s for s in sid if s), "MessageStatus": status, "To": ONCALL}
        assert post_signed(client, "/twilio/status", form, token=token)[0] == 200
    clock.advance(timedelta(seconds=15))
    tasks.alerts(twilio_runtime)
    early = f"Still unhandled, the first alert could not be sent: {ALERT}"
    assert sms_to(twilio_fake, ESCALATION) == [early]
    clock.advance(timedelta(minutes=20))
    assert tasks.alerts(twilio_runtime).claimed == 0
    assert sms_to(twilio_fake, ESCALATION) == [early]

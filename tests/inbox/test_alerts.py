"""Staff alerts: an urgent reply reaches on-call staff by SMS (the real TwilioTransport, the
fake Twilio) and e-mail (a real SMTP server), escalates when the clock passes the limit,
and is never sent twice, however many processes run the alerts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.clock import FakeClock
from followup.inbox.alerts import AlertSettings, alerts_for, run_alerts
from followup.inbox.models import StaffAlert
from followup.inbox.queue import attention_queue
from followup.inbox.service import mark_handled
from followup.messaging.models import HeldStatusReport
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from jobs import tasks
from tests.fakes.transport import ScriptedTransport
from tests.fakes.twilio_server import FakeTwilio
from tests.inbox.conftest import (
    ALERT,
    ALERT_EMAIL,
    ESCALATION,
    ONCALL,
    REFUSED_EMAIL,
    SmtpServer,
    alert_rows,
    sms_to,
)
from tests.messaging.conftest import PUBLIC_BASE_URL, post_signed, reply_form

Enroll = Callable[..., EnrollmentResult]


def test_an_urgent_reply_alerts_on_call_by_sms_and_email_at_once(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
    session: so.Session,
) -> None:
    report = tasks.alerts(twilio_runtime)
    assert (report.claimed, report.sent, report.failed) == (2, 2, 0)
    assert sms_to(twilio_fake, ONCALL) == [ALERT]
    assert sms_to(twilio_fake, ESCALATION) == []  # only when it escalates
    [(to, email)] = smtp_server.sink.messages
    assert to == [ALERT_EMAIL]
    assert email["Subject"] == "urgent patient reply waiting"
    assert ALERT in smtp_server.bodies()[0]
    # No name, phone or reply words in either alert.
    for text in (*sms_to(twilio_fake, ONCALL), *smtp_server.bodies()):
        for secret in ("Ada", "Moreno", "555-0143", "5550143", "numb"):
            assert secret not in text
    assert alert_rows(session) == [
        (0, "sms", ONCALL, "sent"),
        (0, "email", ALERT_EMAIL, "sent"),
    ]
    sms_alert = session.scalars(sa.select(StaffAlert).where(StaffAlert.channel == "sms")).one()
    assert sms_alert.provider_sid in twilio_fake.messages
    # The alerts are shown on the item.
    [item] = attention_queue(session=session, critical_steps=frozenset()).items
    assert [a.describe for a in item.alerts] == [
        f"SMS to on-call {ONCALL}: sent",
        f"e-mail to {ALERT_EMAIL}: sent",
    ]
    # Another pass (or another process) sends nothing more.
    assert tasks.alerts(twilio_runtime).claimed == 0
    assert len(twilio_fake.creates()) == 1 and len(smtp_server.sink.messages) == 1


def test_an_escalation_fires_when_the_clock_passes_the_limit(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
    session: so.Session,
    clock: FakeClock,
) -> None:
    tasks.alerts(twilio_runtime)
    clock.advance(timedelta(minutes=14, seconds=59))
    assert tasks.alerts(twilio_runtime).claimed == 0
    clock.advance(timedelta(seconds=1))  # 15 minutes unhandled
    report = tasks.alerts(twilio_runtime)
    assert report.claimed == 3
    escalated = f"Still unhandled after 15 min: {ALERT}"
    assert sms_to(twilio_fake, ONCALL) == [ALERT, escalated]
    assert sms_to(twilio_fake, ESCALATION) == [escalated]
    assert escalated in smtp_server.bodies()[1]
    assert (
        smtp_server.sink.messages[1][1]["Subject"]
        == "Still unhandled: urgent patient reply waiting"
    )
    assert sorted(alert_rows(session)[2:]) == [
        (1, "email", ALERT_EMAIL, "sent"),
        (1, "sms", ONCALL, "sent"),
        (1, "sms", ESCALATION, "sent"),
    ]
    clock.advance(timedelta(hours=2))
    assert tasks.alerts(twilio_runtime).claimed == 0  # one escalation, not a stream of them
    [item] = attention_queue(session=session, critical_steps=frozenset()).items
    assert "escalation SMS to escalation +12025550122: sent" in [a.describe for a in item.alerts]


def test_a_reply_handled_in_time_does_not_escalate(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    session: so.Session,
    clock: FakeClock,
) -> None:
    tasks.alerts(twilio_runtime)
    clock.advance(timedelta(minutes=10))
    mark_handled(
        session=session, kind="reply", item_id=urgent_reply, note="Called: sent to ER",
        actor="nurse@example.org", now=clock.now(),
    )  # fmt: skip
    session.commit()
    clock.advance(timedelta(minutes=30))
    assert tasks.alerts(twilio_runtime).claimed == 0
    assert len(twilio_fake.creates()) == 1


def test_two_urgent_replies_make_one_alert_per_recipient_with_the_count(
    client: FlaskClient,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    enroll: Enroll,
    session: so.Session,
) -> None:
    enroll()
    token = twilio_runtime.settings.twilio_auth_token or ""
    for body in ("I have a fever", "and the site is red"):
        post_signed(client, "/twilio/inbound", reply_form(body), token=token)
    report = tasks.alerts(twilio_runtime)
    assert report.claimed == 4  # 2 replies x (SMS + e-mail)
    assert sms_to(twilio_fake, ONCALL) == [f"2 urgent replies waiting: {PUBLIC_BASE_URL}/attention"]


def test_a_second_process_finds_the_alert_already_claimed_while_the_first_sends_it(
    urgent_reply: int,
    twilio_runtime: Runtime,
    session_factory: so.sessionmaker[so.Session],
    clock: FakeClock,
) -> None:
    """The claim is committed before the send: a process that runs while the first is
    still talking to Twilio claims nothing."""
    settings = replace(AlertSettings.from_settings(twilio_runtime.settings), emails=())
    inner: list[int] = []

    class Slow(ScriptedTransport):
        def send(self, sms: OutgoingSms) -> SendResult:
            with session_factory() as other:
                inner.append(
                    run_alerts(
                        session=other, settings=settings, sms=ScriptedTransport(),
                        mailer=None, now=clock.now(), owner="worker-2",
                    ).claimed
                )  # fmt: skip
            return super().send(sms)

    transport = Slow()
    with session_factory() as mine:
        report = run_alerts(
            session=mine, settings=settings, sms=transport, mailer=None,
            now=clock.now(), owner="worker-1",
        )  # fmt: skip
    assert (report.sent, inner, len(transport.sent)) == (1, [0], 1)


def test_concurrent_alert_passes_send_each_alert_once(
    urgent_reply: int,
    twilio_runtime: Runtime,
    session_factory: so.sessionmaker[so.Session],
    clock: FakeClock,
) -> None:
    settings = replace(AlertSettings.from_settings(twilio_runtime.settings), emails=())
    transports = [ScriptedTransport() for _ in range(4)]
    start = threading.Barrier(len(transports))
    errors: list[BaseException] = []

    def work(transport: ScriptedTransport, owner: str) -> None:
        try:
            start.wait()
            with session_factory() as own:
                run_alerts(
                    session=own, settings=settings, sms=transport, mailer=None,
                    now=clock.now(), owner=owner,
                )  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(t, f"worker-{i}")) for i, t in enumerate(transports)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sum(len(t.sent) for t in transports) == 1


def test_an_alert_sms_that_did_not_reach_twilio_is_retried_and_one_that_may_have_is_not(
    urgent_reply: int, twilio_runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    settings = replace(AlertSettings.from_settings(twilio_runtime.settings), emails=())
    transport = ScriptedTransport(outcomes=[TransientSendError("network", "could not connect")])

    def run() -> None:
        run_alerts(
            session=session, settings=settings, sms=transport, mailer=None, now=clock.now(),
            owner="w",
        )  # fmt: skip

    run()
    assert alert_rows(session) == [(0, "sms", ONCALL, "retry")]
    run()  # too soon: waits a minute
    assert transport.sent == []
    clock.advance(timedelta(minutes=1))
    run()
    assert alert_rows(session) == [(0, "sms", ONCALL, "sent")]
    assert len(transport.sent) == 1
    assert session.scalars(sa.select(StaffAlert.attempts)).one() == 2

    # Escalation: Twilio timed out after the request left. It may have gone: never resent.
    transport.outcomes = [TransientSendError("timeout", "no answer", maybe_sent=True)] * 2
    clock.advance(timedelta(minutes=15))
    run()
    rows = alert_rows(session)
    assert sorted(rows[1:]) == [(1, "sms", ONCALL, "unknown"), (1, "sms", ESCALATION, "unknown")]
    clock.advance(timedelta(minutes=5))
    run()
    assert len(transport.sent) == 1


def test_a_claim_left_by_a_dead_process_is_marked_unknown_and_never_resent(
    urgent_reply: int, twilio_runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    session.add(
        StaffAlert(
            inbound_message_id=urgent_reply, round=0, channel="sms", role="oncall",
            recipient=ONCALL, status="sending", attempts=1, claimed_at=clock.now(),
            claimed_by="dead-worker", updated_at=clock.now(),
        )
    )  # fmt: skip
    session.commit()
    settings = replace(AlertSettings.from_settings(twilio_runtime.settings), emails=())
    transport = ScriptedTransport()
    clock.advance(timedelta(minutes=6))
    report = run_alerts(
        session=session, settings=settings, sms=transport, mailer=None, now=clock.now(), owner="w"
    )
    assert report.unknown == 1
    assert transport.sent == []
    [alert] = alerts_for(session=session, reply_id=urgent_reply)
    assert alert.status == "unknown" and "not resent" in (alert.error or "")


def test_a_refused_email_address_is_recorded_as_failed_on_the_item(
    urgent_reply: int,
    twilio_runtime: Runtime,
    smtp_server: SmtpServer,
    session: so.Session,
    clock: FakeClock,
) -> None:
    settings = replace(
        AlertSettings.from_settings(twilio_runtime.settings), emails=(REFUSED_EMAIL,)
    )
    from followup.inbox.mail import SmtpMailer

    report = run_alerts(
        session=session, settings=settings, sms=None,
        mailer=SmtpMailer.from_url(smtp_server.url), now=clock.now(), owner="w",
    )  # fmt: skip
    assert report.failed == 1
    [alert] = alerts_for(session=session, reply_id=urgent_reply)
    assert alert.status == "failed"
    assert alert.describe == (
        f"e-mail to {REFUSED_EMAIL}: failed (the mail server refused the address (SMTP 550))"
    )


def test_an_unreachable_mail_server_is_retried(
    urgent_reply: int, twilio_runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    from followup.inbox.mail import SmtpMailer

    settings = replace(AlertSettings.from_settings(twilio_runtime.settings), oncall_phone=None)
    closed = SmtpMailer.from_url("smtp://127.0.0.1:9")  # the discard port: nothing listens
    report = run_alerts(
        session=session, settings=settings, sms=None, mailer=closed, now=clock.now(), owner="w"
    )
    assert report.retried == 1
    assert alert_rows(session) == [(0, "email", ALERT_EMAIL, "retry")]


def test_the_alert_sms_delivery_report_is_recorded_on_the_alert(
    urgent_reply: int,
    twilio_runtime: Runtime,
    client: FlaskClient,
    session: so.Session,
) -> None:
    tasks.alerts(twilio_runtime)
    sid = session.scalars(
        sa.select(StaffAlert.provider_sid).where(StaffAlert.channel == "sms")
    ).one()
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = {"MessageSid": sid or "", "MessageStatus": "delivered", "To": ONCALL}
    assert post_signed(client, "/twilio/status", form, token=token)[0] == 200
    assert alert_rows(session)[0] == (0, "sms", ONCALL, "delivered")


def test_an_alert_sms_failure_reported_before_twilio_answers_is_recorded_on_the_alert(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    client: FlaskClient,
    session: so.Session,
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    answered: list[int] = []

    def failed_at_once(message: dict[str, object]) -> None:
        # The callback overtakes Twilio's answer: the alert's SID is not recorded yet.
        form = {"MessageSid": str(message["sid"]), "MessageStatus": "undelivered", "To": ONCALL}
        answered.append(post_signed(client, "/twilio/status", form, token=token)[0])

    twilio_fake.on_create = failed_at_once
    tasks.alerts(twilio_runtime)
    assert answered == [200]
    assert alert_rows(session)[0] == (0, "sms", ONCALL, "failed")
    assert session.scalar(sa.select(sa.func.count()).select_from(HeldStatusReport)) == 0


def test_without_recipients_nothing_is_sent(
    urgent_reply: int, session: so.Session, clock: FakeClock
) -> None:
    transport = ScriptedTransport()
    report = run_alerts(
        session=session, settings=AlertSettings(), sms=transport, mailer=None,
        now=clock.now(), owner="w",
    )  # fmt: skip
    assert (report.claimed, transport.sent) == (0, [])


def test_alerts_log_ids_never_names_phones_or_words(
    urgent_reply: int, twilio_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tasks.alerts(twilio_runtime)
    # Our own lines and the HTTP client's (the test's SMTP server logs its own traffic).
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert "alerts " in ours and "channel=sms" in ours
    for secret in ("Ada", "Moreno", "5550143", "numb", ONCALL, ONCALL[2:], ALERT_EMAIL):
        assert secret not in ours


def test_tick_with_now_runs_the_alerts_and_the_escalation(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    twilio_fake: FakeTwilio,
    smtp_server: SmtpServer,
) -> None:
    """An operator tries the alerts from the command line, as the README says."""
    from followup.cli import main
    from tests.messaging.conftest import signature

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    env = {
        "DATABASE_URL": url,
        "TWILIO_ACCOUNT_SID": twilio_fake.account_sid,
        "TWILIO_AUTH_TOKEN": twilio_fake.auth_token,
        "TWILIO_FROM_NUMBER": "+12025550199",
        "TWILIO_API_BASE_URL": twilio_fake.base_url,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "ONCALL_PHONE": "(202) 555-0111",
        "ALERT_EMAIL": ALERT_EMAIL,
        "SMTP_URL": smtp_server.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    main(["db", "upgrade"])
    main([
        "--now", "2026-03-06T20:00Z", "enroll", "--first-name", "Ada", "--last-name", "Moreno",
        "--phone", "202-555-0143", "--procedure", "kyphoplasty",
        "--completed-at", "2026-03-06T13:30", "--timezone", "America/New_York", "--no-blood-thinner", "--consent",
    ])  # fmt: skip
    from followup.app import create_app
    from followup.clock import FakeClock
    from followup.runtime import build_runtime
    from followup.settings import load_settings

    runtime = build_runtime(load_settings(), FakeClock(twilio_fake.now()))
    app = create_app(runtime.settings, runtime=runtime)
    form = reply_form("I can't feel my legs")
    sig = signature(twilio_fake.auth_token, PUBLIC_BASE_URL + "/twilio/inbound", form)
    assert (
        app.test_client()
        .post("/twilio/inbound", data=form, headers={"X-Twilio-Signature": sig})
        .status_code
        == 200
    )
    runtime.engine.dispose()
    capsys.readouterr()
    main(["--now", "2026-03-06T20:01Z", "tick"])
    assert "alerts: claimed 2, sent 2" in capsys.readouterr().out
    main(["--now", "2026-03-06T20:20Z", "tick"])
    assert "alerts: claimed 2, sent 2" in capsys.readouterr().out
    assert [f["Body"] for f in twilio_fake.creates() if f["To"] == ONCALL] == [
        ALERT,
        f"Still unhandled after 15 min: {ALERT}",
    ]
    assert len(smtp_server.sink.messages) == 2

"""A delivery report for a staff alert's SMS that comes while the alerts job is committing
the alert's SID (PostgreSQL, READ COMMITTED) is held, and applied by the next alerts run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.clock import FakeClock
from followup.inbox.models import StaffAlert
from followup.messaging.models import HeldStatusReport
from followup.runtime import Runtime
from jobs import tasks
from tests.fakes.twilio_server import FakeTwilio
from tests.inbox.conftest import ONCALL, alert_rows
from tests.messaging.conftest import post_signed


def test_an_alert_sms_failure_reported_while_its_sid_is_committed_reaches_the_alert(
    urgent_reply: int,
    twilio_runtime: Runtime,
    twilio_fake: FakeTwilio,
    client: FlaskClient,
    session: so.Session,
    engine: sa.Engine,
    clock: FakeClock,
) -> None:
    # The alerts job has written the alert's SID (not committed) and looked for held
    # reports (none yet); Twilio's `undelivered` comes now. On PostgreSQL the webhook reads
    # neither the SID nor a text with it, and holds the report; it commits after the job
    # looked. For a patient's text the reaper applies such a report later (and the webhook
    # retries by id); for an alert, the next alerts run does (before, nothing did: it was
    # dropped after a day and the queue kept showing the on-call SMS as sent).
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's webhook waits for the alerts job's write lock: no such window")
    token = twilio_runtime.settings.twilio_auth_token or ""
    sids: list[str] = []
    answered: list[int] = []

    def remember(message: dict[str, Any]) -> None:
        sids.append(str(message["sid"]))

    def report_while_committing(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = statement.lstrip().upper()
        if sids and not answered and text.startswith("SELECT") and "HELD_STATUS_REPORTS" in text:
            form = {"MessageSid": sids[0], "MessageStatus": "undelivered", "To": ONCALL}
            answered.append(post_signed(client, "/twilio/status", form, token=token)[0])

    twilio_fake.on_create = remember
    sa.event.listen(engine, "after_cursor_execute", report_while_committing)
    try:
        tasks.alerts(twilio_runtime)
    finally:
        sa.event.remove(engine, "after_cursor_execute", report_while_committing)
    assert answered == [200]
    session.expire_all()
    sms = session.scalars(sa.select(StaffAlert).where(StaffAlert.channel == "sms")).one()
    assert sms.provider_sid == sids[0]
    # The race happened: the report was held, the alert still says sent.
    held = session.scalars(sa.select(HeldStatusReport.provider_sid)).all()
    assert held == [sids[0]]

    # Every periodic job runs, for a day and more.
    for _ in range(3):
        clock.advance(timedelta(hours=12))
        tasks.reap(twilio_runtime)
        tasks.alerts(twilio_runtime)
        tasks.poll_statuses(twilio_runtime)

    assert alert_rows(session)[0] == (0, "sms", ONCALL, "failed")
    assert session.scalar(sa.select(sa.func.count()).select_from(HeldStatusReport)) == 0

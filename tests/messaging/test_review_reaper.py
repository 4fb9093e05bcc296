"""Adversarial review of the reaper's reconciliation path: scenarios found wanting."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import SendResult, TransientSendError
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import (
    Enroll,
    correct_end,
    dispatch,
    restart_due_now,
    text,
)


class HookedFind(ScriptedTransport):
    """`during_find` runs (once) while the reaper asks the provider."""

    during_find: Callable[[], None] | None = None

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        hook, self.during_find = self.during_find, None
        if hook is not None:
            hook()
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


def test_a_window_reopened_while_the_reaper_asks_is_not_expired_on_the_old_times(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # The restart text's request, a minute before its window closes (+96 h), times out
    # before Twilio took it. Once its lease has run out the reaper takes it (expiry read:
    # the old one) and asks Twilio; meanwhile a nurse corrects the end two hours later,
    # which re-times the text (+96 h of the new end: its window is open for two hours more).
    # Twilio does not have it: it must go again, not be expired on the times it read.
    transport = HookedFind()
    procedure_id, _, new_due = restart_due_now(session, transport, care, clock, enroll)
    old_expiry = text(session, "blood-thinner-restart").expires_at
    transport.outcomes = [TransientSendError("timeout", "no answer", maybe_sent=True)]
    assert dispatch(session, transport, care, old_expiry - timedelta(minutes=1)).unknown == 1
    restart = text(session, "blood-thinner-restart")
    assert restart.status == "sending" and restart.lease_expires_at is not None
    reap_at = old_expiry - timedelta(seconds=1)
    assert restart.lease_expires_at <= reap_at

    def nurse_corrects_the_end() -> None:
        correct_end(session, care, procedure_id, "2026-03-06T16:30", reap_at)

    transport.provider_has = []
    transport.during_find = nurse_corrects_the_end
    reap_stale(session=other_session, transport=transport, now=reap_at)
    restart = text(session, "blood-thinner-restart")
    assert restart.expires_at == old_expiry + timedelta(hours=2)  # the nurse's re-timing
    assert restart.status == "pending", restart.status
    dispatch(session, transport, care, reap_at + timedelta(seconds=1))
    assert transport.steps_sent() == ["blood-thinner-restart"]

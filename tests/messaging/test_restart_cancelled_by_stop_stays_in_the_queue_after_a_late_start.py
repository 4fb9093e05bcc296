"""A blood-thinner restart cancelled by the patient's STOP is a critical item ("they may
not know when to restart"). If the patient texts START only after the restart's window has
closed, START leaves the text cancelled (it is never sent late): the patient still never
got it, and nobody has followed it up. The item must stay in the queue until a nurse
handles it; it must not vanish because the patient is no longer opted out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.inbox.queue import attention_queue, queue_counts
from followup.messaging.models import CANCELLED
from followup.patients.validation import EnrollmentResult
from tests.messaging.helpers import messages


def test_a_restart_cancelled_by_stop_stays_an_item_after_a_start_past_its_window(
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # Friday evening, after the no-driving text: the patient texts STOP. The restart
    # (+48 h, Sunday) is cancelled: an item for a nurse to call about.
    assert reply("STOP")[0] == 200
    restart = messages(session)["blood-thinner-restart"]
    assert restart.status == CANCELLED
    critical = care.critical_steps()
    before = attention_queue(session=session, critical_steps=critical)
    assert [i.key for i in before.items] == [f"text:{restart.id}"]

    # Nobody has handled it yet when, the next week, the patient texts START: the
    # restart's window has closed, so it stays cancelled and is never sent.
    clock.set(restart.expires_at + timedelta(days=1))
    assert reply("START")[0] == 200
    assert messages(session)["blood-thinner-restart"].status == CANCELLED

    # The patient still does not know when to restart their warfarin, and no one has
    # called: the item is still open.
    after = attention_queue(session=session, critical_steps=critical)
    assert [i.key for i in after.items] == [f"text:{restart.id}"], (
        "the unhandled restart item left the queue when the patient texted START"
    )
    assert queue_counts(session=session, critical_steps=critical).open == 1

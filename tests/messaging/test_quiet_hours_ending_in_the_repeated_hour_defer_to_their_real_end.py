"""Quiet hours that end inside the hour a fall-back night repeats (review helper).

With QUIET_HOURS=00:30-01:30 in New York, 01:00-02:00 happens twice on 2026-11-01. At
01:05 EST (the second 01:05, 06:05 UTC) the wall clock is inside quiet hours, which end at
01:30 EST (06:30 UTC). `quiet_period_end` computes the end as 01:30 on that date with
fold=0, the *first* 01:30 (EDT, 05:30 UTC), already past; its guard against "an earlier
instant" then answers the instant itself: "quiet hours end now".

So the planner plans a text at 01:05 EST inside quiet hours, and the dispatcher defers a
text found there "until now" (not_before = the instant): the next claim takes it again at
once, the hand-over defers it again, and the worker's loop, whose next wake is "now",
spins claim/defer/commit for 25 minutes, a `claimed` and a `deferred` event each turn.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import QuietHours, defer_past_quiet_hours
from followup.clock import FakeClock
from followup.messaging.claims import next_wake
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import PENDING, Message
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import event_kinds, seed

NEW_YORK = ZoneInfo("America/New_York")
QUIET = QuietHours(time(0, 30), time(1, 30))
# 01:05 EST on the fall-back night: the second 01:05 (the first was 05:05 UTC, EDT).
SECOND_0105 = datetime(2026, 11, 1, 6, 5, tzinfo=UTC)
REAL_END = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST: the wall clock leaves 00:30-01:30


def test_a_text_planned_in_the_repeated_hour_is_moved_to_the_end_of_quiet_hours() -> None:
    local = SECOND_0105.astimezone(NEW_YORK)
    assert (local.hour, local.minute, local.tzname()) == (1, 5, "EST")
    assert QUIET.contains(local.time())  # inside quiet hours by the patient's wall clock
    due = defer_past_quiet_hours(SECOND_0105, NEW_YORK, QUIET)
    # Before the fix: 01:05 EST itself, a due time inside quiet hours.
    assert due == REAL_END, due.astimezone(NEW_YORK)


def test_a_text_found_in_the_repeated_quiet_hour_waits_for_its_end_not_a_spin(
    session: so.Session, care: CareContext
) -> None:
    night = replace(care, quiet_hours=QUIET)
    [text_id] = seed(
        session,
        1,
        due=SECOND_0105 - timedelta(minutes=10),
        expires=SECOND_0105 + timedelta(hours=48),
        tz="America/New_York",
        step="blood-thinner-restart",
        blood_thinner="Eliquis",
    )
    transport = ScriptedTransport()
    clock = FakeClock(SECOND_0105)
    # The worker's loop: a pass, then the next wake; three turns at the same instant.
    wakes = []
    for _ in range(3):
        dispatch_due(
            session=session, transport=transport, care=night, clock=clock, owner="w",
            rng=random.Random(7),
        )  # fmt: skip
        wakes.append(next_wake(session=session, now=clock.now(), owner="w"))
    assert transport.sent == []  # never sent in quiet hours (this part holds)
    session.expire_all()
    text = session.scalars(sa.select(Message).where(Message.id == text_id)).one()
    assert text.status == PENDING
    deferrals = event_kinds(session, text_id).count("deferred")
    # Deferred once, to 01:30 EST; the loop sleeps until then. Before the fix: deferred
    # "until now" (01:05 EST) each pass, and the next wake is now: the loop spins.
    assert text.not_before == REAL_END, (text.not_before, deferrals)
    assert wakes == [REAL_END] * 3, wakes
    assert deferrals == 1

"""The hand-over guard's own conditions, each on its own: the other checks around it (the
hand-over read, the sending thread's last look at the clock) would hide the loss of one.

Each scene moves the clock, or commits another process's change, at the exact point where
the dispatcher has read a claimed text and not yet guarded it (its render), as
test_races.py does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy.orm as so

import followup.messaging.turns as turns_module
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import claim_due
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import EXPIRED, PENDING, SENDING, SENT, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.turns import DispatchPass
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import at, dispatch, event_kinds, seed

NOON = at("2026-03-06T12:00")  # far from quiet hours in New York


def one_text_claimed_by_w1(session: so.Session, clock: FakeClock, *, window: timedelta) -> int:
    """A text due at noon whose window closes `window` later, claimed (and committed) by w1."""
    clock.set(NOON)
    [text_id] = seed(session, 1, due=NOON, expires=NOON + window, tz="America/New_York")
    assert claim_due(session=session, now=clock.now(), owner="w1", limit=10) == [text_id]
    session.commit()
    return text_id


def before_the_guard(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Run `change` once, after the hand-over has read the text and before its guard."""
    render = turns_module.render_message
    done: list[bool] = []

    def render_then_change(*args: Any, **kwargs: Any) -> str:
        if not done:
            done.append(True)
            change()
        return render(*args, **kwargs)

    monkeypatch.setattr(turns_module, "render_message", render_then_change)


def test_the_guard_checks_the_window_at_its_own_instant_not_the_reads_or_the_claims(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(NOON)
    [text_id] = seed(
        session, 1, due=NOON, expires=NOON + timedelta(seconds=10), tz="America/New_York"
    )
    # Claimed and read at noon (9 s to spare); by the guard, 1 s is left: under the margin.
    before_the_guard(monkeypatch, lambda: clock.set(NOON + timedelta(seconds=9)))
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        assert turn.claim()
        session.commit()
        guarded = turn.hand_over(list(turn.ready))
        session.commit()

    assert guarded == [], "handed to a worker with its window closing under the margin"
    assert turn.report.returned == 1
    assert session.get(Message, text_id).status == PENDING  # type: ignore[union-attr]
    monkeypatch.undo()
    report = dispatch(session, transport, care, clock.now(), owner="w1")
    assert transport.sent == [] and report.expired == 1
    assert session.get(Message, text_id).status == EXPIRED  # type: ignore[union-attr]
    assert event_kinds(session, text_id) == ["claimed", "requeued", "claimed", "expired"]


def test_a_text_claimed_again_by_another_dispatcher_before_the_guard_is_its_to_send(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text_id = one_text_claimed_by_w1(session, clock, window=timedelta(hours=8))

    def w1_stalls_past_its_lease_and_w2_claims_it() -> None:
        clock.advance(timedelta(minutes=2))
        reaped = reap_stale(session=other_session, transport=transport, now=clock.now())
        assert reaped.requeued == 1  # never handed over: back in the queue
        assert claim_due(session=other_session, now=clock.now(), owner="w2", limit=10) == [text_id]
        other_session.commit()

    before_the_guard(monkeypatch, w1_stalls_past_its_lease_and_w2_claims_it)
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as w1:
        turn = DispatchPass(w1, session, DispatchReport(), None)
        guarded = turn.hand_over([text_id])
        session.commit()
    # w2's claim, unexpired and not handed over yet: only w2 may hand it over.
    assert guarded == [], "w1 handed over a text under w2's lease"
    assert turn.report.lost == 1
    monkeypatch.undo()
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as w2:
        turn2 = DispatchPass(w2, other_session, DispatchReport(), None)
        turn2.start_calls(turn2.hand_over([text_id]))
        other_session.commit()
        turn2.outcomes.record([turn2.answers.get(timeout=10)])  # type: ignore[list-item]
        other_session.commit()
    assert len(transport.sent) == 1
    session.expire_all()
    message = session.get(Message, text_id)
    assert message is not None and message.status == SENT


def test_a_claim_whose_lease_ran_out_is_not_handed_over_and_goes_again_once(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    text_id = one_text_claimed_by_w1(session, clock, window=timedelta(hours=8))
    clock.advance(timedelta(minutes=2))  # w1 stalled past its lease; no reaper ran yet
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        guarded = turn.hand_over([text_id])
        session.commit()

    assert guarded == [], "handed over under a lease that had run out"
    message = session.get(Message, text_id)
    assert message is not None and message.status == PENDING and message.handed_at is None
    report = dispatch(session, transport, care, clock.now())
    assert report.sent == 1 and len(transport.sent) == 1


def test_a_backlog_read_in_quiet_hours_is_deferred_at_the_hand_over_without_a_call(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    # Due at 20:00, claimed at 20:00, handed over at 23:00 local: quiet hours.
    clock.set(at("2026-03-06T20:00"))
    [text_id] = seed(
        session, 1, due=clock.now(), expires=clock.now() + timedelta(days=2), tz="America/New_York"
    )
    assert claim_due(session=session, now=clock.now(), owner="w1", limit=10) == [text_id]
    session.commit()
    clock.set(at("2026-03-06T20:59:59"))  # 1 s before quiet hours: inside the margin
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        guarded = turn.hand_over([text_id])
        session.commit()

    # Decided at the hand-over: no worker is given a text only to withhold it.
    assert guarded == [] and turn.report.deferred == 1
    message = session.get(Message, text_id)
    assert message is not None and message.status == PENDING
    assert message.not_before == at("2026-03-07T08:00")
    assert message.attempts == 0 and message.status != SENDING
    assert transport.sent == []

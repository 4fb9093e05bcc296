"""The reaper and late answers: a window re-timed while Twilio is asked, and an earlier
request that may be at Twilio while a later one of the same text is unknown or refused."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import Dispatcher
from followup.messaging.handover import Answer
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.messaging.turns import DispatchPass
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import (
    Enroll,
    correct_end,
    dispatch,
    listed_then_settled,
    requeued_mid_request,
    restart_due_now,
    text,
)
from tests.messaging.test_closed_copy_asked import ListsLate
from tests.messaging.test_reaper import dead_dispatcher_left


class DuringFind:
    """`during_find` runs (once) while the reaper asks the provider."""

    during_find: Callable[[], None] | None = None

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        hook, self.during_find = self.during_find, None
        if hook is not None:
            hook()
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)  # type: ignore[misc]


class HookedFind(DuringFind, ScriptedTransport):
    pass


class ListsLateHooked(DuringFind, ListsLate):
    pass


@contextmanager
def second_request(
    session_factory: so.sessionmaker[so.Session],
    transport: ScriptedTransport,
    care: CareContext,
    clock: FakeClock,
    after: datetime,
) -> Iterator[tuple[DispatchPass, so.Session, Answer]]:
    """w2 claims the requeued text 6 minutes after `after` and sends it again; yields its
    pass, its session and its answer, not recorded yet."""
    with (
        session_factory() as session2,
        Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as w2,
    ):
        clock.set(after + timedelta(minutes=6))
        turn2 = DispatchPass(w2, session2, DispatchReport(), None)
        assert turn2.claim()
        session2.commit()
        group = list(turn2.ready)
        turn2.ready.clear()
        turn2.start_calls(turn2.hand_over(group))
        session2.commit()
        yield turn2, session2, turn2.answers.get(timeout=5)


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


@pytest.mark.parametrize("w1_first", [True, False], ids=["w1-answer-first", "w2-answer-first"])
def test_a_request_at_twilio_is_found_when_a_later_request_of_the_text_is_unknown_too(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    w1_first: bool,
) -> None:
    # w1's request (15:00) reached Twilio, its answer timed out and w1 stalled; the reaper,
    # which Twilio did not list it to yet, requeued the text. w2 sent it again at 15:06:
    # that request timed out before reaching Twilio. Both late answers are recorded (either
    # order). Twilio lists w1's text now: once the lease has run out the reaper must find it
    # (the patient has it) rather than look only from w2's request on and send it again.
    transport = ListsLate()
    with (
        requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
            turn1,
            answer1,
        ),
        second_request(session_factory, transport, care, clock, answer1.at) as (
            turn2,
            session2,
            answer2,
        ),
    ):
        assert answer2.error is not None and answer2.error.maybe_sent
        late = [(turn1, answer1, session), (turn2, answer2, session2)]
        for turn, answer, its_session in late if w1_first else late[::-1]:
            turn.answers.put(answer)
            turn.outcomes.record(turn.collect())
            its_session.commit()
    message = text(session, "no-driving")
    assert message.status == "sending" and message.lease_expires_at is not None
    assert len(transport.created) == 1  # only w1's request reached Twilio
    transport.listing = True
    clock.set(message.lease_expires_at + timedelta(seconds=1))
    report = reap_stale(session=other_session, transport=transport, now=clock.now())
    dispatch(session, transport, care, clock.now())
    message = text(session, "no-driving")
    assert len(transport.created) == 1, "sent to the patient a second time"
    assert (report.reconciled, message.status, message.provider_sid) == (
        1,
        "sent",
        transport.created[0][2],
    )


class RefusedSecond(ListsLate):
    """As ListsLate, but the second request is refused for now (a 503 before Twilio took
    it: not maybe sent), so it is retried."""

    def send(self, sms: OutgoingSms) -> SendResult:
        if self.calls == 1:
            self.calls += 1
            raise TransientSendError("503", "service unavailable", maybe_sent=False)
        return super().send(sms)


def test_a_request_at_twilio_taken_back_while_a_later_one_is_refused_for_now_is_not_resent(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # As above, but w2's request is refused for now (not at Twilio) and w1's late timeout
    # is recorded while w2's request is under way: w2's retry puts the text back in the
    # queue and it goes a second time, though w1's request may be (and is) at Twilio.
    transport = RefusedSecond()
    with (
        requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
            turn1,
            answer1,
        ),
        second_request(session_factory, transport, care, clock, answer1.at) as (
            turn2,
            session2,
            answer2,
        ),
    ):
        assert answer2.error is not None and not answer2.error.maybe_sent
        for turn, answer, its_session in [(turn1, answer1, session), (turn2, answer2, session2)]:
            turn.answers.put(answer)
            turn.outcomes.record(turn.collect())
            its_session.commit()
    listed_then_settled(session, other_session, transport, care, clock)
    assert len(transport.created) == 1, "sent to the patient a second time"


def test_an_earlier_request_marked_while_the_reaper_asks_from_a_later_one_is_not_resent(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # w1's request (15:00) reached Twilio; its answer timed out and w1 stalled; the reaper
    # (Twilio not listing it yet) requeued the text. w2 sent it again at 15:06; that request
    # timed out before reaching Twilio (outcome unknown). Once w2's lease ran out the
    # reaper took the text and asks Twilio from w2's request on; meanwhile w1's late answer
    # is recorded: take_back's new "earlier" guard marks the text to be asked from 15:00.
    # The reaper must not then requeue it on a look that started after 15:00: w1's text
    # is at Twilio (the patient has it).
    transport = ListsLateHooked()
    with (
        requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
            turn1,
            answer1,
        ),
        second_request(session_factory, transport, care, clock, answer1.at) as (
            turn2,
            session2,
            answer2,
        ),
    ):
        assert answer2.error is not None and answer2.error.maybe_sent
        turn2.answers.put(answer2)
        turn2.outcomes.record(turn2.collect())
        session2.commit()
        message = text(session, "no-driving")
        assert message.status == "sending" and message.lease_expires_at is not None

        def w1_answer_comes() -> None:
            turn1.answers.put(answer1)
            turn1.outcomes.record(turn1.collect())
            session.commit()

        transport.listing = True
        transport.during_find = w1_answer_comes
        clock.set(message.lease_expires_at + timedelta(seconds=1))
        reap_stale(session=other_session, transport=transport, now=clock.now())
    listed_then_settled(session, other_session, transport, care, clock, minutes=(0, 1, 5))
    assert len(transport.created) == 1, "sent to the patient a second time"
    assert text(session, "no-driving").status == "sent"


class FirstTimesOut(ListsLate):
    """As ListsLate, but every request after the first goes through."""

    def send(self, sms: OutgoingSms) -> SendResult:
        if self.calls == 1:
            self.calls += 1
            result = ScriptedTransport.send(self, sms)
            self.created.append((sms.to, sms.body, result.provider_sid, sms.now))
            return result
        return super().send(sms)


def test_a_late_answer_for_a_text_claimed_again_but_not_handed_over_yet_keeps_it_from_going(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # w1's request (15:00) reached Twilio, its answer timed out and w1 stalled; the reaper,
    # which Twilio did not list it to yet, requeued the text, and w2 claimed it. Before w2
    # hands it over, w1's late answer says the request may be at Twilio: w2 must not send
    # it; the reaper asks Twilio from w1's request on, finds it and records it.
    transport = FirstTimesOut()
    with (
        requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
            turn1,
            answer1,
        ),
        session_factory() as session2,
        Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as w2,
    ):
        clock.set(answer1.at + timedelta(minutes=6))
        turn2 = DispatchPass(w2, session2, DispatchReport(), None)
        assert turn2.claim()
        session2.commit()
        turn1.answers.put(answer1)
        turn1.outcomes.record(turn1.collect())
        session.commit()
        group = list(turn2.ready)
        turn2.ready.clear()
        turn2.start_calls(turn2.hand_over(group))
        session2.commit()
        turn2.outcomes.record(turn2.collect())
        session2.commit()
    listed_then_settled(session, other_session, transport, care, clock)
    assert len(transport.created) == 1, "sent to the patient a second time"
    assert text(session, "no-driving").status == "sent"


class PassNeverEnds(BaseException):
    """Raised by the fake to stop a reaper pass that keeps asking about the same texts."""


def test_a_reaper_pass_with_a_moving_clock_ends_while_the_provider_cannot_be_asked(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A dispatcher died with two texts handed over. Twilio's list API is down: each
    # question times out after a long wait (the reaper's clock moves on meanwhile), and
    # each text is asked again later (`_ask_again_later`: the lease is pushed 15 s or a
    # quarter of the text's age on). A pass takes its batches at the clock's instant now
    # (eae9af0): by the time it has asked about the second batch, the first batch's "ask
    # again later" has already come, so the same pass takes it again, and again: the pass
    # never ends (the
    # closed-copies pass and the held delivery reports after it never run): the back-off
    # grows with the text's age but stops at 15 minutes, and a pass that takes longer than
    # that to go round its texts takes each one again forever. Production shape: 1,500
    # stale texts (a Twilio outage), 500 a batch, 16 questions at once timing out at 10 s:
    # 320 s a batch, 960 s a round. Here: 16 texts, batches of one, 61 s a question.
    texts = 16
    now, _ = dead_dispatcher_left(session, care, clock, enroll, texts)
    running = FakeClock(now + LEASE)
    asked: list[str] = []

    class TimingOut(ScriptedTransport):
        def find_sent(
            self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
        ) -> SendResult | None:
            asked.append(to)
            if len(asked) > 3 * texts:
                raise PassNeverEnds(f"asked {len(asked)} times in one pass")
            running.advance(LEASE + timedelta(seconds=1))  # the request's wait
            raise TransientSendError("timeout", "no answer from the list API")

    try:
        report = reap_stale(
            session=session,
            transport=TimingOut(provider_has=[]),
            now=now + LEASE,
            batch=1,
            clock=running,
        )
    except PassNeverEnds as exc:
        raise AssertionError(f"the reaper's pass does not end: {exc}") from None
    assert (report.stale, report.errors) == (texts, texts)  # each asked once this pass

"""A dispatcher stalled past its lease while its request to Twilio was under way: the
reaper may have asked Twilio too early (it did not list the text yet) and requeued it,
re-planning, a cancellation or a STOP may have touched it since, and then the answer comes.
Whatever the order, the text reaches the patient once, never early, and the log says what
Twilio has.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import claim_due
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import DELIVERED
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.status import record_status_callback
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.messaging.turns import DispatchPass
from followup.patients.edits import (
    preview_completion_change,
)
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import (
    Enroll,
    TimedOutAtTwilio,
    correct_end,
    dispatch,
    event_details,
    history,
    no_driving_claimed,
    requeued_mid_request,
    restart_due_now,
    text,
)


def test_a_late_sent_answer_is_recorded_even_after_a_replan_expired_the_requeued_text(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, result):
        handed = turn.hand_over(list(turn.ready))
        session.commit()
        turn.start_calls(handed)
        answer = turn.answers.get(timeout=5)  # Twilio took it; this dispatcher then stalls
    assert answer.result is not None
    # Past its lease, the reaper asks Twilio, which does not list the text yet: requeued.
    transport.provider_has = []
    later = clock.now() + timedelta(minutes=10)
    assert reap_stale(session=other_session, transport=transport, now=later).requeued == 1
    # A nurse then moves the end of the procedure to the day before: its window has passed.
    correct_end(other_session, care, result.procedure.id, "2026-03-05T14:25", later)
    assert text(session, "no-driving").status == "expired"

    # The stalled dispatcher records Twilio's answer at last: the patient has the text, so
    # the log says so (with its SID, for the delivery reports), and nothing sends it again.
    turn.outcomes.record([answer])
    session.commit()
    message = text(session, "no-driving")
    assert (message.status, message.provider_sid) == ("sent", answer.result.provider_sid)
    assert history(session, "no-driving")[-1] == "sent"
    dispatch(session, transport, care, later + timedelta(minutes=1))
    # No-driving never again. The next step (day 1 of the new end, due now) goes out, and
    # the welcome with it: when the nurse corrected the end, Twilio had not listed
    # no-driving, which carried the introduction (HELP, STOP, rates), so it went again with
    # the welcome (twice rather than never).
    steps = transport.steps_sent()
    assert steps[0] == "no-driving" and sorted(steps[1:]) == ["soreness", "welcome"]


def twilio_lists_it_and_the_reaper_asks(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    """Twilio lists the no-driving text now; once its lease has run out, the reaper asks
    and records it sent with Twilio's SID, and nothing sends it again."""
    message = text(session, "no-driving")
    assert message.status == "sending" and message.lease_expires_at is not None
    transport.provider_has = [(message.to_phone or "", message.body or "", "SM-first")]
    clock.set(message.lease_expires_at + timedelta(seconds=1))
    report = reap_stale(session=other_session, transport=transport, now=clock.now())
    assert (report.reconciled, report.requeued) == (1, 0)
    message = text(session, "no-driving")
    assert (message.status, message.provider_sid) == ("sent", "SM-first")
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]


class AcceptedThenLost(ScriptedTransport):
    """Twilio takes the text, then the answer is lost (a read timeout): outcome unknown."""

    def send(self, sms: OutgoingSms) -> SendResult:
        super().send(sms)
        raise TimeoutError("read timed out")


def test_an_unknown_outcome_of_a_text_claimed_again_meanwhile_is_reconciled_not_resent(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    transport = AcceptedThenLost()
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, _):
        turn.start_calls(turn.hand_over(list(turn.ready)))
        session.commit()
        answer = turn.answers.get(timeout=5)  # lost in the wire; this dispatcher stalls
        assert answer.unknown == "TimeoutError"
        # Past its lease, the reaper asks Twilio, which does not list the text yet: requeued.
        transport.provider_has = []
        clock.set(clock.now() + timedelta(minutes=10))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued
        # The stalled dispatcher wakes, claims the text again (it is due) and only then
        # takes the unknown answer of its first request.
        assert turn.claim()
        session.commit()
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
    # Twilio lists it now. Once the lease has run out, the reaper must ask, not resend.
    twilio_lists_it_and_the_reaper_asks(session, other_session, care, clock, transport)


def test_a_timeout_answer_for_a_text_claimed_again_meanwhile_is_reconciled_not_resent(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    transport = TimedOutAtTwilio()
    with requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
        turn,
        answer,
    ):
        assert turn.claim()  # the stalled dispatcher claims it again, then takes the answer
        session.commit()
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
    twilio_lists_it_and_the_reaper_asks(session, other_session, care, clock, transport)


def test_a_timeout_answer_taken_in_the_turn_that_claims_the_text_again_is_not_resent(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # After six tries the backoff is long: the answer's lease outlives the turn, in which
    # the same pass takes the answer, claims the requeued text again and hands texts over.
    transport = TimedOutAtTwilio()
    with requeued_mid_request(
        session, other_session, care, clock, transport, enroll, attempts=6
    ) as (turn, answer):
        turn.answers.put(answer)
        turn.caught_up_at = None  # it looks for due texts before recording the answer
        turn.run()
    assert transport.steps_sent() == ["no-driving"]
    assert turn.report.lost == 0
    assert history(session, "no-driving")[-1] == "outcome-unknown"
    # Once the answer's lease has run out, the reaper asks Twilio, which lists it now.
    twilio_lists_it_and_the_reaper_asks(session, other_session, care, clock, transport)


def test_a_timeout_answer_after_the_reaper_requeued_takes_the_text_back_from_another_claim(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    transport = TimedOutAtTwilio()
    with requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
        turn,
        answer,
    ):
        # Another dispatcher claims the requeued text; before it hands it over, the stalled
        # one records its timeout: the text may be at Twilio, so it is taken back.
        claimed = claim_due(session=other_session, now=clock.now(), owner="w2", limit=10)
        other_session.commit()
        assert claimed == [answer.item.id]
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
    message = text(session, "no-driving")
    assert (message.status, message.lease_owner, message.handed_at) == ("sending", "w1", answer.at)
    assert (
        "taken back, the provider is asked after"
        in (event_details(session, message.id, "outcome-unknown")[-1])
    )
    # The other dispatcher's hand-over is refused; nothing more goes out meanwhile.
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as other:
        w2 = DispatchPass(other, other_session, DispatchReport(), None)
        assert w2.hand_over(claimed) == []
        other_session.commit()
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]
    # Once the lease has run out, the reaper asks Twilio, which lists it now.
    twilio_lists_it_and_the_reaper_asks(session, other_session, care, clock, transport)


class SlowToList(TimedOutAtTwilio):
    """Twilio does not list the text yet; while the reaper asks, `during_find` happens."""

    during_find: Callable[[], None] | None = None

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        found = super().find_sent(to=to, body=body, since=since, exclude=exclude)
        hook, self.during_find = self.during_find, None
        if hook is not None:
            hook()
        return found


def test_a_timeout_answer_recorded_while_the_reaper_asks_twilio_is_not_resent(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    transport = SlowToList()
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, _):
        group = list(turn.ready)
        turn.ready.clear()
        turn.start_calls(turn.hand_over(group))
        session.commit()
        answer = turn.answers.get(timeout=5)  # the timeout; the dispatcher stalls
        transport.provider_has = []  # Twilio has the text but does not list it yet
        clock.set(clock.now() + timedelta(minutes=2))

        def stalled_dispatcher_records_its_answer() -> None:
            turn.answers.put(answer)
            turn.outcomes.record(turn.collect())
            session.commit()

        transport.during_find = stalled_dispatcher_records_its_answer
        report = reap_stale(session=other_session, transport=transport, now=clock.now())
    assert report.requeued == 0  # its requeue is refused: the text was taken back
    message = text(session, "no-driving")
    assert (message.status, message.lease_owner) == ("sending", "w1")
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]


def test_a_taken_back_text_gives_twilio_a_whole_lease_to_list_it(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    transport = TimedOutAtTwilio()
    with requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
        turn,
        answer,
    ):
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
        lease = turn.d.lease
    message = text(session, "no-driving")
    assert message.status == "sending"
    assert message.lease_expires_at == clock.now() + lease
    # Twilio still does not list it a second later: the reaper does not ask yet.
    clock.set(clock.now() + timedelta(seconds=1))
    report = reap_stale(session=other_session, transport=transport, now=clock.now())
    assert (report.stale, report.requeued) == (0, 0)


def test_a_restart_text_whose_outcome_is_unknown_follows_a_corrected_end_if_resent(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    # At the 48 h mark the restart's request times out before Twilio took it; while the
    # reaper waits to ask, a nurse corrects the end two hours later. Twilio does not have
    # it, so it is sent again: at the new 48 h mark, never two hours early.
    procedure_id, old_due, new_due = restart_due_now(session, transport, care, clock, enroll)
    transport.outcomes = [TransientSendError("timeout", "no answer", maybe_sent=True)]
    assert dispatch(session, transport, care, old_due).unknown == 1
    assert text(session, "blood-thinner-restart").status == "sending"

    # The nurse's preview says what will happen to it.
    patient_id = text(session, "blood-thinner-restart").patient_id
    preview = preview_completion_change(
        session=session, patient_id=patient_id, procedure_id=procedure_id,
        completed_at="2026-03-06T16:30", care=care, now=old_due + timedelta(seconds=10),
    )  # fmt: skip
    [row] = [row for row in preview.rows if row.label == "Restart the blood thinner"]
    assert row.note == "being sent now; if it does not reach the patient, it goes at the new time"
    correct_end(session, care, procedure_id, "2026-03-06T16:30", old_due + timedelta(seconds=10))
    restart = text(session, "blood-thinner-restart")
    assert (restart.status, restart.due_at) == ("sending", new_due)

    transport.provider_has = []
    later = old_due + timedelta(minutes=10)
    assert reap_stale(session=other_session, transport=transport, now=later).requeued == 1
    for now in (later, new_due - timedelta(seconds=1)):
        dispatch(session, transport, care, now)
    assert transport.sent == []
    dispatch(session, transport, care, new_due)
    assert transport.steps_sent() == ["blood-thinner-restart"]
    assert transport.sent[-1].now == new_due


def test_a_late_sent_answer_never_moves_a_text_the_reaper_found_delivered_back_to_sent(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    transport.provider_has = []  # Twilio lists what it takes
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, _):
        handed = turn.hand_over(list(turn.ready))
        session.commit()
        turn.start_calls(handed)
        answer = turn.answers.get(timeout=5)  # Twilio took it; this dispatcher then stalls
    assert answer.result is not None
    # Past its lease, the reaper finds it at Twilio and records it; then it is delivered.
    later = clock.now() + timedelta(minutes=2)
    assert reap_stale(session=other_session, transport=transport, now=later).reconciled == 1
    assert record_status_callback(
        session=other_session,
        provider_sid=answer.result.provider_sid,
        status="delivered",
        error_code=None,
        now=later,
    )
    other_session.commit()

    # The stalled dispatcher records Twilio's answer at last: the delivery stands.
    turn.outcomes.record([answer])
    session.commit()
    message = text(session, "no-driving")
    assert message.status == DELIVERED and message.delivered_at == later
    assert message.provider_sid == answer.result.provider_sid
    assert event_details(session, message.id, "sent")[-1].endswith("already recorded")
    assert transport.steps_sent() == ["no-driving"]

"""The 30001 retry against re-planning and late answers (found by a review; each failed before
its fix): a retried text takes the procedure's current times, and a late answer never writes
back the copy that failed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import PENDING, SENT
from followup.messaging.reconcile import reap_stale
from followup.messaging.status import record_status_callback
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import at, correct_end, dispatch, messages, no_driving_claimed


def test_a_30001_after_a_correction_closed_the_window_does_not_send_it_again(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # 14:35: the no-driving text ("do not drive today") goes to Twilio. 14:40: the nurse
    # corrects the end: the procedure was yesterday, so the text's window (day 0, 21:00)
    # closed last night; the text is `sent`, so re-planning keeps it. 14:41: Twilio
    # reports its copy failed with 30001: the patient got nothing. Requeued with the
    # window it had before the correction, it goes out today, a day late.
    transport = ScriptedTransport(provider_has=[])
    clock.set(at("2026-03-06T14:35"))
    result = enroll(completed_at="2026-03-06T14:30")
    dispatch(session, transport, care, clock.now())
    sent = messages(session)["no-driving"]
    assert sent.status == SENT and sent.provider_sid
    sid = sent.provider_sid
    clock.set(at("2026-03-06T14:40"))
    correct_end(session, care, result.procedure.id, "2026-03-05T14:30", clock.now())
    clock.set(at("2026-03-06T14:41"))
    record_status_callback(
        session=session, provider_sid=sid, status="failed", error_code=30001,
        now=clock.now(), care=care,
    )  # fmt: skip
    session.commit()
    for minutes in (1, 5, 20, 60):
        dispatch(session, transport, care, clock.now() + timedelta(minutes=minutes))
    text = messages(session)["no-driving"]
    assert transport.steps_sent().count("no-driving") == 1, (
        f"sent again after its corrected window closed (expires {text.expires_at}, "
        f"status {text.status})"
    )


def test_a_correction_while_pending_after_a_30001_closes_its_window(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # As above, the 30001 first, then the correction while the text waits for its retry.
    transport = ScriptedTransport(provider_has=[])
    clock.set(at("2026-03-06T14:35"))
    result = enroll(completed_at="2026-03-06T14:30")
    dispatch(session, transport, care, clock.now())
    sid = messages(session)["no-driving"].provider_sid or ""
    clock.set(at("2026-03-06T14:40"))
    record_status_callback(
        session=session, provider_sid=sid, status="failed", error_code=30001,
        now=clock.now(), care=care,
    )  # fmt: skip
    session.commit()
    assert messages(session)["no-driving"].status == "pending"
    correct_end(session, care, result.procedure.id, "2026-03-05T14:30", clock.now())
    for minutes in (1, 5, 20, 60):
        dispatch(session, transport, care, clock.now() + timedelta(minutes=minutes))
    text = messages(session)["no-driving"]
    assert transport.steps_sent().count("no-driving") == 1, text.status
    assert text.status == "expired"


def test_restart_30001_after_a_later_end_is_not_sent_before_the_new_mark(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # The blood-thinner restart goes out at the 48 h mark of a 14:30 end; the nurse then
    # corrects the end to 16:30 (the text is `sent`: kept); Twilio reports 30001. The
    # retry must wait for the new 48 h mark, not go out two hours early.
    transport = ScriptedTransport(provider_has=[])
    clock.set(at("2026-03-06T14:35"))
    result = enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    dispatch(session, transport, care, at("2026-03-06T14:35"))
    dispatch(session, transport, care, at("2026-03-07T10:00"))
    old_mark = at("2026-03-06T14:30") + timedelta(hours=48)
    new_mark = at("2026-03-06T16:30") + timedelta(hours=48)
    transport.sent.clear()
    dispatch(session, transport, care, old_mark + timedelta(minutes=1))
    restart = messages(session)["blood-thinner-restart"]
    assert restart.status == SENT, restart.status
    correct_end(
        session, care, result.procedure.id, "2026-03-06T16:30", old_mark + timedelta(minutes=2)
    )
    record_status_callback(
        session=session, provider_sid=restart.provider_sid or "", status="failed",
        error_code=30001, now=old_mark + timedelta(minutes=3), care=care,
    )  # fmt: skip
    session.commit()
    when = [old_mark + timedelta(minutes=m) for m in (4, 10, 30, 60, 100)]
    times = []
    for now in when:
        before = len(transport.sent)
        dispatch(session, transport, care, now)
        times += [now for sms in transport.sent[before:] if sms.step == "blood-thinner-restart"]
    assert all(t >= new_mark for t in times), f"restart re-sent at {times}, new mark {new_mark}"


def test_a_late_answer_does_not_put_back_the_copy_that_failed_with_30001(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    # Dispatcher w1 hands the no-driving text over; Twilio takes it (copy A) but w1
    # stalls before recording the answer. Past its lease the reaper finds A at Twilio and
    # records it; Twilio then reports A failed with 30001: the text goes back to the queue
    # (the patient got nothing). w1's late answer (sid A) then comes: written "anyway"
    # (outcomes.record_sent, guard "unsent": any pending text), it marks the text sent
    # with the failed copy, and the retry never goes: the patient never gets the text.
    transport = ScriptedTransport(provider_has=[])
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, _):
        group = list(turn.ready)
        turn.ready.clear()
        turn.start_calls(turn.hand_over(group))
        session.commit()
        answer = turn.answers.get(timeout=5)
        assert answer.result is not None
        copy_a = answer.result.provider_sid
        clock.set(clock.now() + timedelta(minutes=2))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).reconciled
        other_session.commit()
        assert messages(other_session)["no-driving"].provider_sid == copy_a
        record_status_callback(
            session=other_session, provider_sid=copy_a, status="failed", error_code=30001,
            now=clock.now(), care=care,
        )  # fmt: skip
        other_session.commit()
        assert messages(other_session)["no-driving"].status == PENDING
        turn.answers.put(answer)  # w1 wakes up
        turn.outcomes.record(turn.collect())
        session.commit()
    text = messages(session)["no-driving"]
    assert (text.status, text.provider_sid) == (PENDING, None), (
        f"the late answer put back the failed copy: {text.status}, sid {text.provider_sid}"
    )
    for minutes in (1, 5, 20):
        dispatch(session, transport, care, clock.now() + timedelta(minutes=minutes))
    assert transport.steps_sent().count("no-driving") == 2, "never sent again"

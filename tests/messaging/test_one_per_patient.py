"""One text per patient in flight (turns.py `DispatchPass`): a patient's texts due together
go one after another, the intro first. A text parked behind its patient's text in flight
ends every pass settled (sent, pending, deferred, cancelled), never left claimed in
`sending`, and never sent twice, whatever became of the text it waited for."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

import followup.messaging.turns as turns_module
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import claim_due
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.messaging.turns import DispatchPass
from followup.patients.edits import record_staff_opt_out
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, dispatch, history

HELP = "Reply HELP for help or STOP to end them."
THREE = ["welcome", "blood-thinner-restart", "warning-signs"]


@dataclass
class OnePatient(ScriptedTransport):
    """Records the calls and how many of one number's were under way at once; `hook` runs
    at the start of each call (the request's moment), and each call takes `latency`."""

    latency: float = 0.05
    hook: Callable[[OutgoingSms], None] | None = None
    calls: list[str] = field(default_factory=list)
    peak: int = 0
    _under_way: Counter[str] = field(default_factory=Counter)

    def send(self, sms: OutgoingSms) -> SendResult:
        with self._lock:
            self.calls.append(sms.step)
            self._under_way[sms.to] += 1
            self.peak = max(self.peak, self._under_way[sms.to])
        try:
            if self.hook is not None:
                self.hook(sms)
            threading.Event().wait(self.latency)  # the request's latency
            return super().send(sms)
        finally:
            with self._lock:
                self._under_way[sms.to] -= 1


def three_due_at_once(clock: FakeClock, enroll: Enroll) -> EnrollmentResult:
    """Enrolled on day 3 at 10:00:30 after a procedure with a blood thinner: the restart
    (due since day 2) and the warning signs (due at 10:00) fall due with the welcome that
    carries the intro (neither can)."""
    clock.set(at("2026-03-13T10:00:30"))
    result = enroll(completed_at="2026-03-10T09:00", blood_thinner="Eliquis")
    assert result.procedure.intro_step == "welcome"
    return result


def three_due_then_another(clock: FakeClock, enroll: Enroll) -> tuple[int, int]:
    """The patient of `three_due_at_once`, and another enrolled a second later with texts
    due too (after the first one's in due order); their ids."""
    patient = three_due_at_once(clock, enroll).patient.id
    clock.advance(timedelta(seconds=1))
    other = enroll(completed_at="2026-03-13T09:00", phone="(202) 555-0199").patient.id
    return patient, other


def texts(session: so.Session) -> dict[str, Message]:
    session.expire_all()
    return {m.step: m for m in session.scalars(sa.select(Message).order_by(Message.id))}


def assert_settled(session: so.Session) -> None:
    """Nothing left claimed and never handed over; no lease held outside `sending`."""
    for step, m in texts(session).items():
        assert not (m.status == "sending" and m.handed_at is None), (step, history(session, step))
        if m.status != "sending":
            assert m.lease_owner is None, step


def test_three_texts_of_one_patient_due_at_once_go_one_at_a_time_the_intro_first(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    three_due_at_once(clock, enroll)
    transport = OnePatient()
    report = dispatch(session, transport, care, clock.now())
    assert transport.calls == THREE and transport.steps_sent() == THREE
    assert transport.peak == 1
    assert [HELP in sms.body for sms in transport.sent] == [True, False, False]
    assert (report.claimed, report.sent, report.lost) == (3, 3, 0)
    assert {m.status for m in texts(session).values() if m.step in THREE} == {"sent"}
    assert_settled(session)


@pytest.mark.parametrize("maybe_sent", [False, True], ids=["503", "timeout"])
def test_the_texts_parked_behind_a_welcome_refused_for_now_go_after_its_answer(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, maybe_sent: bool
) -> None:
    three_due_at_once(clock, enroll)
    error = TransientSendError("503" if not maybe_sent else "timeout", "x", maybe_sent=maybe_sent)
    transport = OnePatient(outcomes=[error])
    dispatch(session, transport, care, clock.now())
    assert transport.calls == THREE and transport.peak == 1
    assert transport.steps_sent() == THREE[1:]
    welcome = texts(session)["welcome"]
    if maybe_sent:  # handed over, outcome unknown: the reaper's, not a stranded claim
        assert welcome.status == "sending" and welcome.handed_at is not None
    else:
        assert (welcome.status, welcome.attempts) == ("pending", 1)
        dispatch(session, transport, care, clock.now() + timedelta(minutes=30))
        assert sorted(transport.steps_sent()) == sorted(THREE)  # each once
    assert_settled(session)


def test_a_stop_while_the_welcome_is_under_way_hands_the_parked_texts_back(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    three_due_at_once(clock, enroll)
    transport = OnePatient()
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        transport.hook = lambda sms: dispatcher.request_stop()
        report = dispatcher.dispatch(session)
    assert transport.steps_sent() == ["welcome"]
    assert (report.claimed, report.sent, report.returned) == (3, 1, 2)
    left = texts(session)
    assert [left[s].status for s in THREE] == ["sent", "pending", "pending"]
    assert history(session, "warning-signs")[-1] == "requeued"
    assert_settled(session)


def test_a_patient_who_opts_out_while_the_welcome_is_under_way_gets_nothing_more(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    result = three_due_at_once(clock, enroll)

    def opt_out(sms: OutgoingSms) -> None:
        record_staff_opt_out(
            session=other_session, patient_id=result.patient.id, now=clock.now(), actor="nurse"
        )
        other_session.commit()

    transport = OnePatient(hook=opt_out)
    report = dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["welcome"]  # handed over before the opt-out
    assert report.cancelled == 2
    left = texts(session)
    assert [left[s].status for s in THREE] == ["sent", "cancelled", "cancelled"]
    assert_settled(session)


def test_the_texts_parked_behind_a_welcome_its_guard_refused_are_settled_in_the_pass(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The patient opts out between the hand-over's read and its guard: the welcome is
    # refused by the guard (back to the queue), and the texts parked behind it go back to
    # the queue with it (so that, claimed again together, the welcome goes first), each
    # cancelled at its next hand-over.
    result = three_due_at_once(clock, enroll)
    render = turns_module.render_message
    done: list[int] = []

    def render_while_the_patient_opts_out(*args: Any, **kwargs: Any) -> str:
        if not done:
            done.append(
                record_staff_opt_out(
                    session=other_session,
                    patient_id=result.patient.id,
                    now=clock.now(),
                    actor="nurse",
                )
            )
            other_session.commit()
        return render(*args, **kwargs)

    monkeypatch.setattr(turns_module, "render_message", render_while_the_patient_opts_out)
    # Claimed in a turn of its own (on SQLite, the read is then outside a write transaction).
    ids = claim_due(session=session, now=clock.now(), owner="w1", limit=10)
    session.commit()
    transport = OnePatient()
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        turn.ready.extend(ids)
        turn.report.claimed += len(ids)
        turn.run()
    assert transport.calls == []
    assert not turn.waiting_ids() and not turn.busy and not turn.ready
    left = texts(session)
    # Back in the queue (claimed again and cancelled in this pass if it looks for more
    # texts before it ends, else in the next one).
    assert {left[s].status for s in THREE} <= {"pending", "cancelled"}
    assert_settled(session)
    monkeypatch.setattr(turns_module, "render_message", render)
    dispatch(session, transport, care, clock.now())
    assert transport.calls == []
    assert [texts(session)[s].status for s in THREE] == ["cancelled"] * 3


def test_the_texts_parked_behind_a_welcome_withheld_for_quiet_hours_wait_for_the_morning(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Enrolled at 20:59:50 on day 2 after a procedure with a blood thinner: the restart is
    # due, and the welcome carries the intro. Quiet hours start between the welcome's
    # guard and its call: the worker withholds it; the restart, parked behind it, is
    # deferred at its own hand-over. Both go at 08:00, the welcome first.
    clock.set(at("2026-03-13T20:59:50"))
    result = enroll(completed_at="2026-03-11T20:00", blood_thinner="Eliquis")
    assert result.procedure.intro_step == "welcome"
    guard = DispatchPass.guard

    def guard_then_quiet_hours(self: DispatchPass, items: Any) -> Any:
        answer = guard(self, items)
        clock.set(at("2026-03-13T21:00:00"))
        return answer

    monkeypatch.setattr(DispatchPass, "guard", guard_then_quiet_hours)
    transport = OnePatient()
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        dispatcher.dispatch(session)
    assert transport.calls == []
    left = texts(session)
    pair = ["welcome", "blood-thinner-restart"]
    assert [left[s].status for s in pair] == ["pending", "pending"]
    assert history(session, "blood-thinner-restart")[-1] == "deferred"
    assert_settled(session)
    monkeypatch.setattr(DispatchPass, "guard", guard)
    dispatch(session, transport, care, at("2026-03-14T08:00"))
    assert transport.steps_sent() == pair and transport.peak == 1
    assert_settled(session)


def test_the_texts_parked_behind_a_welcome_throttled_for_long_are_given_back_for_the_pause(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A 429 with Retry-After 30 s on the welcome: the pacer pauses past LONG_PAUSE, so the
    # texts parked behind it go back to the queue until the pause is over.
    three_due_at_once(clock, enroll)
    throttled = TransientSendError("429", "too many", retry_after=30, throttled=True)
    transport = OnePatient(outcomes=[throttled])
    report = dispatch(session, transport, care, clock.now())
    assert transport.calls == ["welcome"] and transport.sent == []
    left = texts(session)
    assert [left[s].status for s in THREE] == ["pending"] * 3
    assert report.throttled == 3  # the welcome, and the two given back
    assert all(left[s].not_before is not None for s in THREE[1:])
    assert_settled(session)


def test_a_patient_whose_texts_another_dispatcher_holds_is_left_to_it(
    session: so.Session, other_session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    # w1 claims two of the patient's three texts (its claim is full); w2, claiming at the
    # same moment, must leave the third to w1 (else the two send them side by side, in
    # any order) and take the other patient's texts instead.
    patient, other = three_due_then_another(clock, enroll)
    now = clock.now()
    first = claim_due(session=session, now=now, owner="w1", limit=2)
    if session.get_bind().dialect.name == "postgresql":
        # Both claims under way at once: neither sees the other's uncommitted claim.
        second = claim_due(session=other_session, now=now, owner="w2", limit=10)
        session.commit()
        other_session.commit()
    else:
        session.commit()
        second = claim_due(session=other_session, now=now, owner="w2", limit=10)
        other_session.commit()
    owners = {m.id: m.patient_id for m in _all(session)}
    assert len(first) == 2 and {owners[i] for i in first} == {patient}
    assert second and {owners[i] for i in second} == {other}
    left = [m for m in _all(session) if m.patient_id == patient and m.step in THREE]
    assert sorted(m.status for m in left) == ["pending", "sending", "sending"]
    # Once w1's texts are answered, the patient's last one is anyone's.
    session.execute(
        sa.update(Message).where(Message.id.in_(first)).values(status="sent", lease_owner=None)
    )
    session.commit()
    third = claim_due(session=other_session, now=now, owner="w2", limit=10)
    assert [owners[i] for i in third] == [patient]


def _all(session: so.Session) -> list[Message]:
    session.expire_all()
    return list(session.scalars(sa.select(Message).order_by(Message.id)))


def test_two_dispatchers_at_once_send_each_patient_one_text_at_a_time(
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Forty patients with three texts each due at once, two dispatchers passing together:
    # their claims (50 at a time) cut through patients. Each number has one text under way
    # at a time, and each text goes once.
    clock.set(at("2026-03-13T10:00:30"))
    for i in range(40):
        enroll(completed_at="2026-03-10T09:00", blood_thinner="Eliquis",
               phone=f"(202) 555-{i + 100:04d}")  # fmt: skip
    transport = OnePatient(latency=0.02)
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(owner: str) -> None:
        try:
            with (
                session_factory() as own,
                Dispatcher(transport=transport, care=care, clock=clock, owner=owner,
                           concurrency=4) as dispatcher,
            ):  # fmt: skip
                start.wait()
                while dispatcher.dispatch(own).claimed:
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(owner,)) for owner in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert transport.peak == 1
    sent = Counter((sms.to, sms.step) for sms in transport.sent)
    assert len(sent) == 120 and set(sent.values()) == {1}


class ListingDown(OnePatient):
    """Twilio's list requests fail (a partial outage): the reaper cannot ask, for now."""

    def find_sent(self, **kwargs: Any) -> SendResult | None:
        raise TransientSendError("503", "list unavailable")


def test_a_text_a_reaper_cannot_ask_about_yet_holds_up_none_of_the_patients_others(
    session: so.Session, other_session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    # w1 handed the welcome over and died. The reaper takes it and cannot ask Twilio (its
    # list requests fail): it keeps the welcome under its own lease, to ask again later.
    # That lease may last minutes, for as long as the outage: the patient's other texts,
    # the blood-thinner restart among them, go meanwhile (a text waits for an answer, not
    # for success), through any dispatcher.
    patient = three_due_at_once(clock, enroll).patient.id
    [welcome] = claim_due(session=session, now=clock.now(), owner="w1", limit=1)
    session.execute(
        sa.update(Message)
        .where(Message.id == welcome)
        .values(handed_at=clock.now(), body="Welcome", to_phone="+12025550100")
    )
    session.commit()
    clock.advance(timedelta(minutes=2))
    report = reap_stale(session=session, transport=ListingDown(), now=clock.now())
    assert report.errors == 1
    held = _all(session)[0]
    assert held.id == welcome and held.status == "sending"
    assert held.lease_expires_at is not None and held.lease_expires_at > clock.now()
    claimed = claim_due(session=other_session, now=clock.now(), owner="w2", limit=10)
    other_session.commit()
    steps = {m.id: m.step for m in _all(session) if m.patient_id == patient}
    assert sorted(steps[i] for i in claimed) == sorted(THREE[1:])


def test_a_claim_looks_past_the_texts_of_patients_another_dispatcher_holds(
    session: so.Session, other_session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    # w1 took the first of a patient's three texts due at once and stopped (a process that
    # died, a pass stalled: its lease lives on for up to a minute). The patient's other two
    # are the next due: w2's claim of two must look past them to the other patient's
    # texts due now, not come back empty (and the pass think itself caught up) while
    # texts of patients nobody holds wait for w1's lease to run out.
    patient, other = three_due_then_another(clock, enroll)
    now = clock.now()
    [held] = claim_due(session=session, now=now, owner="w1", limit=1)
    session.commit()
    owners = {m.id: m.patient_id for m in _all(session)}
    assert owners[held] == patient
    second = claim_due(session=other_session, now=now, owner="w2", limit=2)
    other_session.commit()
    assert second and {owners[i] for i in second} == {other}


def test_a_claim_that_took_nothing_leaves_no_lock_behind_while_its_calls_are_under_way(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # w2 is sending a patient's texts (a slow call under way) and looks for more every
    # RECLAIM_EVERY. Another patient's texts fall due just as w1 starts claiming them:
    # w2's look reads them (on PostgreSQL locking their rows, FOR UPDATE SKIP LOCKED), finds
    # their patient's claim lock taken and claims nothing. w1 commits its claim and looks
    # again for the patient's other texts: they must be there for it, not locked by w2's
    # transaction, left open until w2's call answers (seconds at a slow provider).
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("on SQLite a claim's read locks no row")
    clock.set(at("2026-03-13T10:00:30"))
    patient = enroll(completed_at="2026-03-10T09:00", blood_thinner="Eliquis").patient.id
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == patient, Message.step.in_(THREE))
        .values(due_at=at("2026-03-13T10:00:40"))
    )
    session.commit()
    enroll(completed_at="2026-03-13T09:00", phone="(202) 555-0199")
    claim = turns_module.claim_due
    armed, looked_again = threading.Event(), threading.Event()
    after: list[int] = []

    def w2_claim(**kwargs: Any) -> list[int]:
        if not armed.is_set():
            return claim(**kwargs)
        if not after:
            took = claim(**kwargs)  # reads the patient's texts while w1 claims them
            after.append(len(took))
            return took
        looked_again.set()  # the turn of w2's look above is over
        return []

    def w1_claims(sms: OutgoingSms) -> None:
        if armed.is_set():
            return
        clock.set(at("2026-03-13T10:00:41"))
        first = claim_due(session=other_session, now=clock.now(), owner="w1", limit=1)
        assert len(first) == 1
        armed.set()
        assert looked_again.wait(10)
        other_session.commit()
        after.extend(claim_due(session=other_session, now=clock.now(), owner="w1", limit=10))
        other_session.commit()

    monkeypatch.setattr(turns_module, "claim_due", w2_claim)
    transport = OnePatient(hook=w1_claims)
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as dispatcher:
        dispatcher.dispatch(session)
    steps = {m.id: m.step for m in _all(session) if m.patient_id == patient}
    assert after[0] == 0  # w2 left the patient to w1
    assert sorted(steps[i] for i in after[1:]) == sorted(THREE[1:])

"""One text per patient in flight, also across the passes of one process.

README ("In order for each patient"): "A patient has at most one text in flight at a time
... and the text that carries the introduction goes first", and a dispatcher claims none
of a patient's texts while one of them is "handed over and not yet answered". A pass whose
turn the database rolls back (a deadlock with re-planning, which the README says happens on
PostgreSQL) ends while its calls are still under way on the worker threads; the loop hands
its claimed texts back and starts the next pass at once (IDLE_FLOOR). That pass, under the
same owner, does not see the call still under way: the claim looks past only *other*
owners' leases (`_held_elsewhere`: `lease_owner != owner`), and the new pass's `busy` is
empty. So the patient's next text goes to Twilio while the welcome is still on its way.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.transports.base import OutgoingSms
from followup.runtime import Runtime
from jobs.dispatcher import DispatchLoop
from tests.messaging.helpers import Enroll
from tests.messaging.test_one_per_patient import OnePatient, three_due_then_another


class _Deadlock(Exception):
    sqlstate = "40P01"


def test_a_pass_rolled_back_mid_call_does_not_let_the_next_pass_send_the_patients_next_text(
    runtime: Runtime, session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    three_due_then_another(clock, enroll)  # welcome + 2 texts of one patient, 1 of another
    welcome_called, release_welcome = threading.Event(), threading.Event()

    def hook(sms: OutgoingSms) -> None:
        if sms.step == "welcome":  # Twilio slow to answer this one (a second, say)
            welcome_called.set()
            release_welcome.wait(10)

    transport = OnePatient(latency=0.0, hook=hook)
    four = replace(
        runtime,
        transport=transport,
        settings=replace(runtime.settings, dispatch_concurrency=4),
    )
    loop = DispatchLoop(four)
    failed: list[str] = []

    def fail_once(_session: so.Session) -> None:
        # The first commit after the other patient's text was answered: a deadlock victim.
        if transport.sent and welcome_called.is_set() and not failed:
            failed.append("turn")
            raise sa.exc.OperationalError("COMMIT", {}, _Deadlock())

    sa.event.listen(four.session_factory, "before_commit", fail_once)
    try:
        loop.run_once()  # the pass fails while the welcome's call is under way
        assert failed == ["turn"] and welcome_called.is_set()
        assert "welcome" not in transport.steps_sent()  # still on its way to Twilio
        loop.run_once()  # the next pass, at once
    finally:
        sa.event.remove(four.session_factory, "before_commit", fail_once)
        release_welcome.set()
        loop.dispatcher.close()
    calls_of_patient = [step for step in transport.calls if step != "no-driving"]
    assert transport.peak == 1, (
        f"{transport.peak} texts of one patient at Twilio's door at once "
        f"(calls in order: {calls_of_patient}; the welcome not yet answered)"
    )

"""The dispatcher's database thread: one pass's loop in turns, and the worker threads.

Each turn takes the answers that came back, claims more due texts when they run short,
and re-checks, renders and guards the next group at the clock's instant; one commit, then
the group's calls start on the worker threads. Every HEARTBEAT the leases of every text
still held are renewed. The Dispatcher (dispatch.py) owns the settings, the pacer and the
threads' own part, the transport call.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections import Counter, deque
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.timing import zone
from followup.messaging.claims import claim_due, read_claimed, renew_statement
from followup.messaging.events import (
    MESSAGES,
    add_events,
    chunks,
    event_row,
    settle_leased,
)
from followup.messaging.handover import Answer, Item
from followup.messaging.models import PENDING, SENDING
from followup.messaging.outbox import reason_not_to_send, render_message
from followup.messaging.outcomes import Outcomes
from followup.messaging.releases import Releases
from followup.messaging.reports import DispatchReport
from followup.messaging.retries import HANDOVER_MARGIN, quiet_end_near
from followup.messaging.workers import Died

if TYPE_CHECKING:
    from followup.messaging.dispatch import Dispatcher

log = logging.getLogger("followup.messaging.dispatch")  # one logger for the whole pass

CLAIM_BATCH = 500  # texts claimed at most at once
GROUP_MAX = 200  # texts guarded (or recorded) in one transaction at most
LONG_PAUSE = 1.0  # seconds: a longer pacer pause hands claimed texts back to the queue
RECLAIM_EVERY = 0.02  # seconds: how often a pass under way looks for texts newly due


class DispatchPass:
    """One dispatcher pass: the database thread's loop and what it holds."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        session: so.Session,
        report: DispatchReport,
        limit: int | None,
    ) -> None:
        self.d = dispatcher
        self.session = session
        self.report = report
        self.outcomes = Outcomes(dispatcher, session, report)
        self.releases = Releases(dispatcher, session, report)
        self.limit = limit
        self.ready: deque[int] = deque()  # claimed, not yet handed over
        self.in_flight: set[int] = set()  # handed to a worker, answer not yet recorded
        # One text per patient at a time, so that they arrive in order (the intro first):
        # the patients with a text in flight, and the texts waiting for that one's answer.
        self.busy: Counter[int] = Counter()
        self.waiting: dict[int, list[int]] = {}
        self.answered: set[int] = set()  # answers taken this turn, recorded in it
        self.answers: queue.SimpleQueue[Answer | Died] = queue.SimpleQueue()
        self.early: list[Answer | Died] = []  # taken off the queue while waiting
        self.call_seconds: float | None = None  # how long a transport call takes (average)
        self.turn_seconds: float | None = None  # how long a database turn takes (average)
        self.caught_up_at: float | None = None  # monotonic: a claim found all that was due
        self.no_more_claims = False  # the provider asked for a long pause
        self.last_beat = time.monotonic()
        self.claim_size = min(CLAIM_BATCH, max(2 * dispatcher.concurrency, 50))

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Until nothing is left: take answers, claim, hand over, record; one commit per turn.

        A turn's answers are recorded in the same transaction as the next group's guard:
        one commit both settles what came back and lets the next calls start.
        """
        d = self.d
        while True:
            answers = self.collect()
            self.beat_if_due()
            if d.stopping and self.ready:
                self.give_back_ready(stopping=True)
            claimed = self.should_claim() and self.claim()
            group: list[int] = []
            free = d.concurrency + self.lookahead() - len(self.in_flight)
            if free > 0 and self.ready:
                granted = d.pacer.take(min(free, len(self.ready), GROUP_MAX))
                group = [self.ready.popleft() for _ in range(granted)]
                if not granted and d.pacer.wait_time() > LONG_PAUSE:
                    self.give_back_ready()
            if answers or group:
                turn = time.monotonic()
                self.outcomes.record(answers)
                started = self.hand_over(group)
                self.session.commit()
                self.start_calls(started)
                self.turn_seconds = _ewma(self.turn_seconds, time.monotonic() - turn)
                continue
            if claimed:
                self.session.commit()
            if not self.ready and not self.in_flight and self.done_claiming():
                return
            self.wait()

    def lookahead(self) -> int:
        """Texts guarded ahead of a free slot: as many calls as end during one database turn
        (none while calls are slow), so fast calls never wait for the database. Each waits
        at most HANDOVER_MAX_WAIT in the pool's queue, normally one turn. None while the
        rate is limited (TWILIO_MAX_PER_SECOND, or recovering from a 429): a text waiting
        in the queue behind a slow call holds a token, and those texts went out together
        when it returned, well over the rate."""
        if self.call_seconds is None or self.turn_seconds is None or self.d.pacer.rate:
            return 0
        expected = self.d.concurrency * self.turn_seconds / max(self.call_seconds, 1e-4)
        return min(GROUP_MAX, int(expected))

    def done_claiming(self) -> bool:
        return (
            self.caught_up_at is not None
            or self.no_more_claims
            or self.d.stopping
            or self.limit_reached()
        )

    def should_claim(self) -> bool:
        """Claim while texts are short; once caught up, look again every RECLAIM_EVERY while
        calls are under way (texts keep falling due: 1,000 within one second)."""
        if self.no_more_claims or self.d.stopping or self.limit_reached():
            return False
        if len(self.ready) >= self.d.concurrency + self.lookahead():
            return False
        caught_up = self.caught_up_at
        return caught_up is None or time.monotonic() - caught_up >= RECLAIM_EVERY

    def limit_reached(self) -> bool:
        return self.limit is not None and self.report.claimed >= self.limit

    def wait(self) -> None:
        """Block until an answer arrives, the pacer allows a hand-over, or a heartbeat is due.
        The pacer is waited for only while a slot is free: with every slot taken by a call
        under way, only an answer frees one (asking the pacer then polled every 1 ms)."""
        timeout = max(self.d.heartbeat.total_seconds() - (time.monotonic() - self.last_beat), 0)
        free = self.d.concurrency + self.lookahead() - len(self.in_flight) > 0
        if self.ready and free:
            timeout = min(timeout, max(self.d.pacer.wait_time(), 0.001))
        elif self.caught_up_at is not None and not self.no_more_claims:
            timeout = min(timeout, RECLAIM_EVERY)
        if self.in_flight:
            try:
                self.early.append(self.answers.get(timeout=timeout))
            except queue.Empty:
                pass
        elif timeout > 0:
            time.sleep(timeout)  # only the pacer (or a heartbeat) is waited for here

    def collect(self) -> list[Answer]:
        """The answers that have arrived; their slots are free again."""
        arrived, self.early = self.early, []
        try:
            while len(arrived) < GROUP_MAX:
                arrived.append(self.answers.get_nowait())
        except queue.Empty:
            pass
        answers: list[Answer] = []
        for answer in arrived:
            if isinstance(answer, Died):
                # What a worker could not handle (a dying process) stops the pass here:
                # nothing of this group is recorded, and the reaper settles it.
                raise answer.exc
            answers.append(answer)
        self.answered = {answer.item.id for answer in answers}
        for answer in answers:
            self.in_flight.discard(answer.item.id)
            self.busy[answer.item.patient_id] -= 1
            if self.busy[answer.item.patient_id] <= 0:
                del self.busy[answer.item.patient_id]
            if answer.seconds:
                self.call_seconds = _ewma(self.call_seconds, answer.seconds)
        self.resume_waiting()
        return answers

    def resume_waiting(self) -> None:
        """Texts that waited for their patient's text in flight go first once it answered
        (or was never handed over)."""
        for patient_id in [p for p in self.waiting if self.busy[p] <= 0]:
            self.ready.extendleft(reversed(self.waiting.pop(patient_id)))

    # --- claim ----------------------------------------------------------------------------

    def claim(self) -> bool:
        """Lease more due texts (committed with the turn's other writes); True if any."""
        size = min(CLAIM_BATCH, max(self.claim_size, 2 * (self.d.concurrency + self.lookahead())))
        rate = self.d.pacer.rate
        if rate is not None:  # do not lease more than can go out in a few seconds
            size = min(size, max(1, math.ceil(rate * 5)))
        if self.limit is not None:
            size = min(size, self.limit - self.report.claimed)
        now = self.d.clock.now()
        claimed = claim_due(
            session=self.session,
            now=now,
            owner=self.d.owner,
            limit=size,
            lease=self.d.lease,
            lease_now=self.d.lease_at(now),
        )
        # A text re-planned while it waited here and claimed again is queued once: the
        # guard hands a claim over at most once, a second copy would only be refused. One
        # the reaper requeued while its request was under way, claimed again, is settled
        # by that request's answer (recorded in this turn or a later one), never queued.
        queued = set(self.ready) | self.in_flight | self.answered | self.waiting_ids()
        fresh = [i for i in claimed if i not in queued]
        self.report.claimed += len(fresh)
        self.ready.extend(fresh)
        self.caught_up_at = time.monotonic() if len(claimed) < size else None
        if not claimed:
            # Nothing to commit with the turn, but the claim's read may have locked texts
            # (FOR UPDATE) and patients (their claim locks) it then left to another
            # dispatcher: released now, not when this pass next commits (after a call
            # under way answers, seconds at a slow provider), unclaimable meanwhile.
            self.session.commit()
        return bool(claimed)

    # --- hand over ------------------------------------------------------------------------

    def hand_over(self, ids: list[int]) -> list[Item]:
        """Re-check, render and guard a group at the clock's instant (the caller commits,
        then starts the calls); return the texts guarded."""
        if not ids:
            return []
        d, session = self.d, self.session
        now = d.clock.now()
        # A patient's texts in the order they are meant to arrive: the one that introduces
        # the program first, then by due time; each waits for the one before it.
        rows = sorted(
            read_claimed(session, ids),
            key=lambda r: (r.step != r.procedure.intro_step, r.due_at, r.id),
        )
        going: set[int] = set()  # patients with a text in this group
        events: list[dict[str, Any]] = []
        cancelled: dict[str, list[dict[str, Any]]] = {}
        expired: list[dict[str, Any]] = []
        deferred: list[dict[str, Any]] = []
        items: list[Item] = []
        for message in rows:
            patient, procedure = message.patient, message.procedure
            if message.status != SENDING or message.lease_owner != d.owner:
                continue  # no longer ours: the guard below would refuse it anyway
            if message.patient_id in going or self.busy[message.patient_id] > 0:
                self.waiting.setdefault(message.patient_id, []).append(message.id)
                continue
            reason = reason_not_to_send(
                patient=patient, procedure=procedure, care=d.care, step=message.step
            )
            if reason is not None:
                cancelled.setdefault(reason, []).append({"id": message.id})
                continue
            if message.expires_at <= now + HANDOVER_MARGIN:
                expired.append({"id": message.id})
                continue
            tz = zone(patient.timezone)
            quiet_end = quiet_end_near(now, tz, d.care)
            if quiet_end is not None:
                if quiet_end >= message.expires_at - HANDOVER_MARGIN:
                    expired.append({"id": message.id, "detail": "quiet hours last past its expiry"})
                else:
                    deferred.append({"id": message.id, "not_before": quiet_end})
                continue
            body = render_message(
                d.care, procedure=procedure, language=patient.language, tz=tz, step=message.step
            )
            going.add(message.patient_id)
            items.append(
                Item(
                    id=message.id,
                    patient_id=message.patient_id,
                    step=message.step,
                    to=patient.phone,
                    body=body,
                    language=patient.language,
                    due_at=message.due_at,
                    expires_at=message.expires_at,
                    attempts=message.attempts + 1,
                    tz=tz,
                    deadline=0.0,
                )
            )
        settle = self.releases
        done = settle.cancel(cancelled, now, events)
        done |= settle.expire(expired, now, events, default="window closes before it could be sent")
        done |= settle.defer(deferred, now, events)
        ours, guarded = self.guard(items)
        done |= ours
        # Refused by the guard but still ours: changed since the read (the patient opted
        # out, the procedure was cancelled, the window closed). Back to the queue, where
        # the next read settles it, rather than held until the lease runs out.
        refused = [{"id": item.id} for item in items if item.id not in ours]
        back = settle.requeue(refused, now, events, detail="changed before its hand-over")
        done |= back
        done |= self.hand_back_siblings(
            {item.patient_id for item in items if item.id in back}, now, events
        )
        done |= self.waiting_ids()
        for i in ids:
            if i not in done:
                events.append(
                    event_row(
                        i,
                        now,
                        "lost",
                        None,
                        "no longer ours at hand-over (lease lost or re-planned); not sent",
                    )
                )
                self.report.lost += 1
                log.warning("message %s: no longer ours at hand-over; not sent", i)
        add_events(session, events)
        # A call may start only while its lease covers it whole (connect + read timeouts),
        # counted from before the guard's statement: a stalled commit eats into it.
        deadline = guarded + d.lease.total_seconds() - d.allowance_seconds
        return [
            replace(item, deadline=deadline, guarded=guarded) for item in items if item.id in ours
        ]

    def hand_back_siblings(
        self, patients: set[int], now: datetime, events: list[dict[str, Any]]
    ) -> set[int]:
        """The other texts this pass claimed of patients whose text the guard sent back to
        the queue: back with it, so that the next claim takes them together, in order (the
        introduction first). Kept, they went next, ahead of a welcome sent back for a
        number changed since its read."""
        if not patients:
            return set()
        table = MESSAGES.c
        claimed = self.session.scalars(
            sa.select(table.id).where(
                table.patient_id.in_(patients),
                table.status == SENDING,
                table.lease_owner == self.d.owner,
                table.handed_at.is_(None),
            )
        ).all()
        detail = "goes again with its patient's text the guard sent back"
        back = self.releases.requeue([{"id": i} for i in claimed], now, events, detail=detail)
        self.ready = deque(i for i in self.ready if i not in back)
        for patient_id in patients:
            kept = [i for i in self.waiting.pop(patient_id, []) if i not in back]
            if kept:
                self.waiting[patient_id] = kept
        return back

    def start_calls(self, items: list[Item]) -> None:
        """Give each guarded (and committed) text to a worker thread; to a transport that
        does no network call (the console), hand it over here, its answer taken next turn."""
        workers = None if self.d.calls_in_place else self.d.workers()
        for item in items:
            self.in_flight.add(item.id)
            self.busy[item.patient_id] += 1
            if workers is None:
                self.answers.put(self.d.hand_over(item))
            else:
                workers.submit(item, self.answers)
        self.resume_waiting()  # those whose patient's text was not handed over after all

    def waiting_ids(self) -> set[int]:
        return {i for ids in self.waiting.values() for i in ids}

    def guard(self, items: list[Item]) -> tuple[set[int], float]:
        """One guarded UPDATE: still `sending`, our lease unexpired, window open, patient not
        opted out, at the clock's instant now, and the patient's number, language and time
        zone still those the text was rendered with (a nurse's change committed since the
        read sends the text back to the queue, to be rendered again). It extends the lease,
        counts the attempt, marks the hand-over and writes the body and number (before the
        call: the reaper matches on them). Returns the ids guarded and the monotonic time of
        the guard."""
        now, guarded = self.d.clock.now(), time.monotonic()
        lease_now = self.d.lease_at(now)
        ours = settle_leased(
            self.session,
            owner=self.d.owner,
            values={
                "lease_expires_at": lease_now + self.d.lease,
                "handed_at": lease_now,
                "attempts": _ONE_MORE_ATTEMPT,
                "updated_at": now,
            },
            rows=[
                {
                    "id": item.id,
                    "body": item.body,
                    "to_phone": item.to,
                    "language": item.language,
                    "timezone": item.tz.key,
                }
                for item in items
            ],
            lease_unexpired_at=lease_now,
            handover_latest=now + HANDOVER_MARGIN,
        )
        return ours, guarded

    def give_back_ready(self, *, stopping: bool = False) -> None:
        """Hand claimed texts back to the queue: the dispatcher is stopping, or the provider
        asked for a long pause (until it is over). The next pass picks them up."""
        now = self.d.clock.now()
        resume = None if stopping else now + timedelta(seconds=self.d.pacer.wait_time())
        ids = list(self.ready)
        self.ready.clear()
        back = self.releases.release(
            [{"id": i, "not_before": resume} for i in ids], now, status=PENDING
        )
        kind, detail = (
            ("requeued", "the dispatcher stopped before its hand-over")
            if stopping
            else ("throttled", "sending paused by the provider")
        )
        add_events(self.session, [event_row(i, now, kind, PENDING, detail) for i in back])
        self.session.commit()
        if stopping:
            self.report.returned += len(back)
        else:
            self.report.throttled += len(back)
        self.no_more_claims = True

    # --- heartbeat ------------------------------------------------------------------------

    def beat_if_due(self) -> None:
        if time.monotonic() - self.last_beat < self.d.heartbeat.total_seconds():
            return
        self.last_beat = time.monotonic()
        held = list(self.ready) + list(self.in_flight) + list(self.waiting_ids())
        if not held:
            return
        now = self.d.clock.now()
        kept: set[int] = set()
        params = {"p_owner": self.d.owner, "v_lease": self.d.lease_at(now) + self.d.lease}
        for ids in chunks(held):
            kept.update(self.session.scalars(renew_statement(), {**params, "p_ids": ids}))
        self.session.commit()
        lost = [i for i in [*self.ready, *self.waiting_ids()] if i not in kept]
        if lost:
            log.warning("%d claimed texts lost their lease before hand-over", len(lost))
            self.ready = deque(i for i in self.ready if i in kept)
            self.waiting = {p: [i for i in ids if i in kept] for p, ids in self.waiting.items()}
            self.report.lost += len(lost)


def _ewma(average: float | None, sample: float, weight: float = 0.2) -> float:
    return sample if average is None else average + weight * (sample - average)


_ONE_MORE_ATTEMPT = MESSAGES.c.attempts + 1

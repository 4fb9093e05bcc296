"""A soak of the dispatcher's promises with real processes, the real clock and a fake Twilio.

What it checks, against README's "The dispatcher": never twice, never before a text's due
time nor after its expiry, never in the patient's quiet hours, and a killed worker's texts
settled (found at Twilio and recorded, or sent again by another process) within 2 minutes
of the kill. Nothing is mocked but Twilio:

- the fake Twilio (tests/fakes/twilio_server.py) runs in a thread of this process, with
  HTTP keep-alive and --latency seconds before each answer (creates and lists alike), so
  that a batch is in flight when a worker is killed; its switches produce, over the run,
  three 500s after the message was created, three connections dropped after it was
  created, and an outage of creates (503) across the moment quiet hours begin;
- two scheduler processes on the database: two `followup worker` on PostgreSQL, a
  `followup serve` and a `followup worker` on SQLite (the setup README supports there),
  each with its own environment and its output in a file;
- patients are enrolled through the enrollment service in waves over the run (procedures
  done minutes ago: the no-driving text is due at once; the day before: soreness, when it
  is daytime there; booked ones: the welcome), across US time zones. Quiet hours are chosen
  so that they begin in one zone part-way through the run (`--quiet-hours auto`, the
  default: the latest local time of a zone in daytime at that moment, then 08:00; or give
  them, e.g. 21:00-08:00); other zones are in quiet hours for the whole run, others in
  daytime. A wave of the crossing zone's patients is enrolled seconds before quiet hours
  begin there, into the outage;
- `kill -9` of one process (a worker) --kills times, each right after a wave while it holds
  texts handed to Twilio, restarted 5 s later. For each text the dead process held
  (`sending` under its lease, or its reaper's), the time from the kill to the first event
  after it (released) and to its settlement (`sent` with a SID; closed: expired, cancelled,
  failed; or taken back and deferred to the morning by a live dispatcher, quiet hours having
  begun), from `message_events`.

At the end it prints: creates at the fake against texts recorded sent; duplicates (two
creates with the same recipient and body: every patient has a number of their own and each
step's text differs, so a pair is a text sent twice); creates at the fake whose SID no text
recorded; texts that reached the fake (its receive time) before their due time, after their
expiry or inside the patient's quiet hours; kill-to-settled per killed text (median, max)
against 2 minutes; texts left unsettled; and patients' names, numbers or text bodies found
in the processes' output. It exits 1 if any promise was broken.

    python bench/soak.py                                   # SQLite in a temporary folder
    python bench/soak.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/soak --reset
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402
from bench.soak_processes import (  # noqa: E402
    Kill,
    Proc,
    held_by,
    process_env,
    utcnow,
    wait_in_flight,
)
from followup.care.timing import QuietHours  # noqa: E402
from followup.db import make_engine, make_session_factory  # noqa: E402
from followup.messaging.models import Message  # noqa: E402
from followup.patients.service import enroll_patient  # noqa: E402
from followup.patients.validation import EnrollmentForm  # noqa: E402
from followup.runtime import build_care  # noqa: E402
from followup.settings import parse_quiet_hours, settings_from_mapping  # noqa: E402
from tests.fakes.twilio_server import FakeTwilio  # noqa: E402

PROMISE = timedelta(minutes=2)
SETTLE_ROOM = 150  # seconds left after the last kill for its texts to be settled
RESTART_AFTER = 5.0  # seconds between a kill and the restart
# US zones, territories included (at any hour some are in daytime, some at night).
ZONES = (
    "America/Puerto_Rico",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "Pacific/Guam",
)
FIRST_NAMES = ("Ada", "Luis", "Mae", "Omar", "Rosa", "Ivan", "June", "Tariq", "Elsa", "Nico")
SYLLABLES = ("bar", "ven", "kol", "dri", "mas", "tol", "quin", "zar", "pel", "hurst", "wick")
FINAL = frozenset({"sent", "delivered", "undelivered", "failed", "expired", "cancelled"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- time zones and quiet hours -----------------------------------------------------------


def quiet_at(quiet: QuietHours, zone: str, instant: datetime) -> bool:
    return quiet.contains(instant.astimezone(ZoneInfo(zone)).time().replace(tzinfo=None))


def classify(quiet: QuietHours, start: datetime, end: datetime) -> dict[str, str]:
    """Each zone: 'night' (quiet the whole run), 'day' (never quiet), else 'crossing'."""
    kinds = {}
    for zone in ZONES:
        states = {
            quiet_at(quiet, zone, start + timedelta(seconds=s))
            for s in range(0, int((end - start).total_seconds()) + 1, 10)
        }
        kinds[zone] = "night" if states == {True} else "day" if states == {False} else "crossing"
    return kinds


def auto_quiet_hours(boundary: datetime, start: datetime, end: datetime) -> tuple[str, str]:
    """Quiet hours that begin at about `boundary` in one zone in daytime under 21:00-08:00:
    the zone whose local time is then the latest, so the window differs least."""
    default = parse_quiet_hours("21:00-08:00")
    kinds = classify(default, start, end)
    if "crossing" in kinds.values():  # 21:00 or 08:00 falls in the run somewhere already
        return "21:00-08:00", next(z for z, k in kinds.items() if k == "crossing")
    days = [z for z, k in kinds.items() if k == "day"]
    zone = max(days, key=lambda z: boundary.astimezone(ZoneInfo(z)).time())
    local = boundary.astimezone(ZoneInfo(zone))
    if local.second or local.microsecond:  # the next whole minute
        local += timedelta(seconds=60 - local.second)
    return f"{local:%H:%M}-08:00", zone


def quiet_begins(quiet: QuietHours, zone: str, after: datetime) -> datetime | None:
    """The first instant (to the second) after `after` when quiet hours begin in `zone`."""
    t = after.replace(microsecond=0)
    for _ in range(24 * 3600):
        if not quiet_at(quiet, zone, t) and quiet_at(quiet, zone, t + timedelta(seconds=1)):
            return t + timedelta(seconds=1)
        t += timedelta(seconds=1)
    return None


# --- patients -----------------------------------------------------------------------------


@dataclass
class Planned:
    """One enrollment to make during the run."""

    index: int
    zone: str
    kind: str  # done (minutes ago), yesterday, booked
    first: str
    last: str
    phone: str
    language: str

    def form(self, now: datetime) -> EnrollmentForm:
        local = now.astimezone(ZoneInfo(self.zone))
        base: dict[str, Any] = {
            "first_name": self.first,
            "last_name": self.last,
            "phone": self.phone,
            "procedure": "kyphoplasty" if self.index % 2 else "vertebroplasty",
            "timezone": self.zone,
            "language": self.language,
            "consent": True,
            "takes_blood_thinner": False,
        }
        if self.kind == "booked":
            at = (local + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
            return EnrollmentForm(**base, scheduled_at=at.strftime("%Y-%m-%dT%H:%M"))
        minutes = 2 + self.index % 20
        done = local - timedelta(minutes=minutes, days=1 if self.kind == "yesterday" else 0)
        if self.index % 3 == 0:  # a third take a blood thinner: the 48 h restart is planned
            base.update(takes_blood_thinner=True, blood_thinner="Eliquis")
        return EnrollmentForm(**base, completed_at=done.strftime("%Y-%m-%dT%H:%M"))


def surname(i: int) -> str:
    rng = random.Random(i)
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize() + SYLLABLES[i % 11]


def plan_patients(count: int, kinds: dict[str, str], crossing: str) -> list[Planned]:
    day = [z for z, k in kinds.items() if k == "day"] or [crossing]
    night = [z for z, k in kinds.items() if k == "night"] or [crossing]
    people = []
    for i in range(count):
        # Half in daytime zones, a third in the crossing zone, the rest at night.
        slot = i % 6
        zone = day[i % len(day)] if slot < 3 else crossing if slot < 5 else night[i % len(night)]
        kind = ("done", "done", "booked", "yesterday")[i % 4]
        people.append(
            Planned(
                index=i, zone=zone, kind=kind, first=FIRST_NAMES[i % len(FIRST_NAMES)],
                last=surname(i), phone=f"+1202555{1000 + i:04d}",
                language="es" if i % 5 == 4 else "en",
            )
        )  # fmt: skip
    return people


# --- the run ------------------------------------------------------------------------------


def enroll(factory: Any, care: Any, people: list[Planned]) -> int:
    done = 0
    with factory() as session:
        for person in people:
            now = utcnow()
            enroll_patient(
                session=session, form=person.form(now), care=care, region="US", now=now,
                actor="soak",
            )  # fmt: skip
            session.commit()
            done += 1
    return done


def sleep_until(instant: datetime) -> None:
    left = (instant - utcnow()).total_seconds()
    if left > 0:
        time.sleep(left)


def unsettled(engine: sa.Engine) -> int:
    """Texts in flight or ready to go now (due, not waiting for a retry, not expired)."""
    now = utcnow()
    with engine.connect() as conn:
        return int(
            conn.scalar(
                sa.select(sa.func.count()).where(
                    sa.or_(
                        Message.status == "sending",
                        sa.and_(
                            Message.status == "pending",
                            Message.due_at <= now,
                            Message.expires_at > now,
                            sa.or_(Message.not_before.is_(None), Message.not_before <= now),
                        ),
                    )
                )
            )
            or 0
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--reset", action="store_true", help="drop the schema of --database-url")
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--minutes", type=float, default=6.0, help="run length, settling included")
    parser.add_argument("--latency", type=float, default=1.5, help="fake Twilio, s per request")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="DISPATCH_CONCURRENCY")
    parser.add_argument("--quiet-hours", default="auto", help="QUIET_HOURS, or auto")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)

    folder = Path(tempfile.mkdtemp(prefix="followup-soak-"))
    url = fresh_database(args.database_url, args.reset, folder, "soak")
    engine = make_engine(url)
    postgres = engine.dialect.name == "postgresql"

    run_seconds = args.minutes * 60
    active = run_seconds - SETTLE_ROOM  # waves and kills happen in this part of the run
    if active < 60:
        raise SystemExit(f"--minutes {args.minutes}: at least {(SETTLE_ROOM + 60) / 60} needed")
    start = utcnow() + timedelta(seconds=15)  # after the processes' start-up
    end = start + timedelta(seconds=run_seconds)
    boundary_target = start + timedelta(seconds=active * 0.45)
    if args.quiet_hours == "auto":
        quiet_text, crossing = auto_quiet_hours(boundary_target, start, end)
    else:
        quiet_text = args.quiet_hours
        kinds0 = classify(parse_quiet_hours(quiet_text), start, end)
        crossing = next((z for z, k in kinds0.items() if k == "crossing"), "")
    quiet = parse_quiet_hours(quiet_text)
    kinds = classify(quiet, start, end)
    if not crossing:
        crossing = next(z for z, k in kinds.items() if k == "day")
    boundary = quiet_begins(quiet, crossing, start) if kinds[crossing] == "crossing" else None

    fake = FakeTwilio(port=free_port(), latency=args.latency, keep_alive=True).start()
    env = process_env(url, fake, quiet_text, args.concurrency)
    settings = settings_from_mapping(env)
    care = build_care(settings)
    factory = make_session_factory(engine)
    people = plan_patients(args.patients, kinds, crossing)

    print(f"database: {engine.dialect.name} ({url.split('@')[-1]}); output in {folder}")
    print(f"quiet hours {quiet_text}; zones: " + ", ".join(f"{z} {k}" for z, k in kinds.items()))
    if boundary is not None:
        print(f"quiet hours begin in {crossing} at {boundary:%H:%M:%S} UTC")
    night_people = sum(1 for p in people if kinds[p.zone] == "night")
    print(
        f"{len(people)} patients: {night_people} in quiet hours all run, "
        f"{sum(1 for p in people if p.zone == crossing)} in {crossing}; latency "
        f"{args.latency} s, DISPATCH_CONCURRENCY={args.concurrency}, {args.kills} kill(s)"
    )

    if postgres:
        procs = [
            Proc("worker-a", ["worker"], env, folder),
            Proc("worker-b", ["worker"], env, folder),
        ]
        victim, banner = procs[1], "worker "
    else:
        port = free_port()
        procs = [
            Proc("serve", ["serve", "--port", str(port)], env, folder),
            Proc("worker", ["worker"], env, folder),
        ]
        victim, banner = procs[1], "worker "
    for proc in procs:
        proc.start()
    procs[0].wait_ready("worker " if postgres else "followup serving on")
    victim.wait_ready(banner)

    # The timeline: waves of enrollments, a boundary wave before quiet hours begin in the
    # crossing zone, and kills, each right after a wave.
    waves = max(4, args.kills * 2 + 2)
    wave_at = [start + timedelta(seconds=active * i / waves) for i in range(waves)]
    kill_waves = {round((k + 1) * waves / (args.kills + 1)) for k in range(args.kills)}
    kill_waves = {min(max(w, 1), waves - 1) for w in kill_waves}
    crossing_people = [p for p in people if p.zone == crossing]
    boundary_people: list[Planned] = []
    if boundary is not None and boundary < start + timedelta(seconds=active):
        boundary_people = crossing_people[-max(4, len(crossing_people) // 4) :]
    rest = [p for p in people if p not in boundary_people]
    random.Random(args.seed).shuffle(rest)  # every wave a mix of zones and kinds
    # A wave a kill follows is twice as large: more texts in flight when it comes.
    shares = [2 if i in kill_waves else 1 for i in range(waves)]
    cuts = [round(len(rest) * sum(shares[:i]) / sum(shares)) for i in range(waves + 1)]
    batches = [rest[cuts[i] : cuts[i + 1]] for i in range(waves)]
    plan: list[tuple[datetime, str, Any]] = [(wave_at[i], "wave", i) for i in range(waves)]
    if boundary_people and boundary is not None:
        plan.append((boundary - timedelta(seconds=6), "outage", None))
        plan.append((boundary - timedelta(seconds=4), "boundary-wave", None))
    plan.sort(key=lambda item: item[0])

    kills: list[Kill] = []
    events_log: list[str] = []
    for at, what, arg in plan:
        sleep_until(at)
        if what == "outage":
            fake.creates_down_until = boundary + timedelta(seconds=15) if boundary else None
            events_log.append(
                f"{utcnow():%H:%M:%S} creates answered 503 until 15 s past the boundary"
            )
            continue
        if what == "boundary-wave":
            n = enroll(factory, care, boundary_people)
            events_log.append(f"{utcnow():%H:%M:%S} boundary wave: {n} patients in {crossing}")
            continue
        if arg == 1:
            fake.fail_after_accept = 3
            events_log.append(f"{utcnow():%H:%M:%S} next 3 creates: stored, then 500")
        if arg == waves - 2:
            fake.drop_after_accept = 3
            events_log.append(
                f"{utcnow():%H:%M:%S} next 3 creates: stored, then connection dropped"
            )
        n = enroll(factory, care, batches[arg])
        events_log.append(f"{utcnow():%H:%M:%S} wave {arg}: {n} patients")
        if arg in kill_waves and len(kills) < args.kills:
            if victim.process is None or victim.process.poll() is not None:
                victim.start()
                victim.wait_ready(banner)
            holding = wait_in_flight(engine, victim.pid, timeout=15)
            time.sleep(0.3)  # the rest of that turn's hand-overs (well inside --latency)
            pid = victim.pid
            killed_at = victim.kill9()
            held = held_by(engine, pid)
            kills.append(Kill(victim.name, pid, killed_at, held))
            events_log.append(
                f"{killed_at:%H:%M:%S} kill -9 {victim.name} pid {pid}: {len(held)} texts held "
                f"({sum(1 for h in held if h['handed_at'] is not None)} handed to Twilio; "
                f"{holding} seen before the kill)"
            )
            sleep_until(killed_at + timedelta(seconds=RESTART_AFTER))
            victim.start()
            victim.wait_ready(banner)
    # Settling: until nothing is in flight or ready to go (checked twice, 5 s apart), or
    # the run's end.
    quiet_rounds = 0
    while utcnow() < end:
        if unsettled(engine) == 0:
            quiet_rounds += 1
            if quiet_rounds >= 2 and all_settled(engine, kills):
                break
        else:
            quiet_rounds = 0
        time.sleep(5)
    finished = utcnow()
    for proc in procs:
        proc.stop()
    fake.wait_idle(30)
    received = fake.received()
    fake.stop()

    for line in events_log:
        print(line)
    from bench.soak_figures import report

    broken = report(engine, kills, received, people, quiet, folder, procs, start, finished)
    engine.dispose()
    sys.exit(1 if broken else 0)


def all_settled(engine: sa.Engine, kills: list[Kill]) -> bool:
    ids = [h["id"] for k in kills for h in k.held]
    if not ids:
        return True
    with engine.connect() as conn:
        statuses = conn.scalars(sa.select(Message.status).where(Message.id.in_(ids))).all()
    return all(s in FINAL for s in statuses)


if __name__ == "__main__":
    main()

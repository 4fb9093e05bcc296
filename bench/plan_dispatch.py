"""Planning and dispatch against the job-per-text design, side by side in one run.

The design DESIGN.md rejects is APScheduler 3.11 with a SQLAlchemyJobStore holding one
pickled date job per text. On the same database, the same machine, the same procedures:

- **planning**: our set-based outbox (`plan_procedures`) against one `add_job` per text
  (and, for scale, one ORM INSERT per text);
- **dispatch**: one pass of our dispatcher (the console transport, called on the pass's
  own thread as the service calls it: it makes no network call) against the scheduler
  running the due jobs (its default pool of 10 threads), each job rendering its text,
  handing it to the same console transport and recording it `sent` in `messages` (what
  any send log needs); APScheduler then deletes the job. For scale, our pass is also
  timed with the console handed to DISPATCH_CONCURRENCY worker threads, as a network
  transport (Twilio) is.

Each figure is the median of --repeat runs on fresh databases of --sample procedures. The
main run first plans --procedures procedures and dispatches their due texts, for scale.
On PostgreSQL autovacuum is switched off for the bench's tables and the bench runs no
ANALYZE: the tables are a fresh bulk load the planner knows nothing about, and our
planning ANALYZEs them once itself (timed, as it would be in service).

    python bench/plan_dispatch.py                        # SQLite in a temporary folder
    python bench/plan_dispatch.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database  # noqa: E402
from followup.care.planner import plan_procedure  # noqa: E402
from followup.care.protocol import CareContext  # noqa: E402
from followup.care.timing import zone  # noqa: E402
from followup.clock import FakeClock  # noqa: E402
from followup.db import make_engine, make_session_factory  # noqa: E402
from followup.messaging.dispatch import DEFAULT_CONCURRENCY, Dispatcher  # noqa: E402
from followup.messaging.models import Message  # noqa: E402
from followup.messaging.outbox import plan_procedures  # noqa: E402
from followup.messaging.transports.base import OutgoingSms  # noqa: E402
from followup.messaging.transports.console import ConsoleTransport  # noqa: E402
from followup.patients.models import Patient, Procedure  # noqa: E402
from followup.runtime import build_care  # noqa: E402
from followup.settings import Settings  # noqa: E402

# A Tuesday at 15:00 in New York: every no-driving text is due, none in quiet hours.
NOW = datetime(2026, 6, 2, 19, 0, tzinfo=UTC)
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
JOB_TABLE = "bench_apscheduler_jobs"


def seed(session: so.Session, count: int, rng: random.Random) -> None:
    """Insert `count` consented patients, each with a procedure finished 5 to 60 minutes ago."""
    patients = [
        {
            "first_name": "Bench",
            "last_name": f"Patient{i}",
            "phone": f"+1202555{i % 10000:04d}",
            "timezone": ZONES[i % len(ZONES)],
            "language": "en" if i % 5 else "es",
            "sms_consent_at": NOW,
            "created_at": NOW,
        }
        for i in range(count)
    ]
    ids = session.scalars(sa.insert(Patient).returning(Patient.id), patients).all()
    session.execute(
        sa.insert(Procedure),
        [
            {
                "patient_id": pid,
                "kind": "kyphoplasty" if pid % 2 else "vertebroplasty",
                "status": "completed",
                "completed_at": NOW - timedelta(minutes=rng.randint(5, 60)),
                "takes_blood_thinner": pid % 3 == 0,
                "blood_thinner": "Eliquis" if pid % 3 == 0 else None,
                "created_at": NOW,
            }
            for pid in ids
        ],
    )
    session.commit()


def fresh(url: str | None, reset: bool, folder: Path, name: str) -> str:
    """A migrated database; on PostgreSQL with autovacuum (and so auto-ANALYZE) off."""
    url = fresh_database(url, reset, folder, name)
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ("patients", "procedures", "messages", "message_events"):
                conn.execute(sa.text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    engine.dispose()
    return url


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - start


# --- planning -----------------------------------------------------------------------------


def plan_set_based(factory: so.sessionmaker[so.Session], care: CareContext) -> int:
    planned = 0
    with factory() as session:
        while True:
            report = plan_procedures(session=session, care=care, now=NOW)
            session.commit()
            planned += report.planned + report.expired
            if report.procedures == 0:
                return planned


def planned_texts(
    factory: so.sessionmaker[so.Session], care: CareContext
) -> list[tuple[Procedure, Any]]:
    with factory() as session:
        rows = session.execute(sa.select(Procedure, Patient.timezone).join(Patient)).all()
        session.expunge_all()
    texts = []
    for procedure, tz_name in rows:
        for p in plan_procedure(
            protocol=care.protocol(procedure.kind),
            completed_at=procedure.completed_at,  # type: ignore[arg-type]
            tz=zone(tz_name),
            has_blood_thinner=procedure.blood_thinner is not None,
            quiet_hours=care.quiet_hours,
            now=NOW,
        ):
            texts.append((procedure, p))
    return texts


def plan_one_by_one(factory: so.sessionmaker[so.Session], care: CareContext) -> int:
    """One ORM add + flush per text, as a naive planner would."""
    texts = planned_texts(factory, care)
    with factory() as session:
        for procedure, p in texts:
            session.add(
                Message(
                    procedure_id=procedure.id, patient_id=procedure.patient_id, step=p.step,
                    due_at=p.due_at, expires_at=p.expires_at, status=p.status, attempts=0,
                    created_at=NOW, updated_at=NOW,
                )
            )  # fmt: skip
            session.flush()
        session.commit()
    return len(texts)


PEER_ENGINE = {"engine": "ours"}


def job_scheduler(url: str) -> Any:
    """APScheduler with a SQLAlchemyJobStore on the same database: on our engine (WAL and
    synchronous=NORMAL on SQLite, as the service runs), or as its documentation configures
    it (`SQLAlchemyJobStore(url=...)`: SQLite's defaults, a rollback journal synced on every
    commit) with --peer-engine default."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    store = (
        SQLAlchemyJobStore(url=url, tablename=JOB_TABLE)
        if PEER_ENGINE["engine"] == "default"
        else SQLAlchemyJobStore(engine=make_engine(url), tablename=JOB_TABLE)
    )
    return BackgroundScheduler(jobstores={"default": store}, timezone="UTC")


def plan_apscheduler_jobs(
    scheduler: Any, factory: so.sessionmaker[so.Session], care: CareContext
) -> int:
    """One pickled date job per text: what the job-per-text design does to plan.

    The texts' rows already exist (planned by ours, untimed) so that each job can name its
    text, as the send log needs; the timed part computes each text's plan and stores its job.
    """
    with factory() as session:
        ids = {
            (procedure_id, step): message_id
            for message_id, procedure_id, step in session.execute(
                sa.select(Message.id, Message.procedure_id, Message.step)
            )
        }
    start = time.perf_counter()
    texts = planned_texts(factory, care)
    real_now = datetime.now(UTC)
    for procedure, p in texts:
        # Run dates moved to the real clock (the scheduler runs on it): due ones now.
        scheduler.add_job(
            send_job, "date", run_date=max(real_now + (p.due_at - NOW), real_now),
            args=(ids[procedure.id, p.step],), id=f"m{ids[procedure.id, p.step]}",
            misfire_grace_time=None,
        )  # fmt: skip
    _JOB["plan_elapsed"] = time.perf_counter() - start
    return len(texts)


# --- dispatch -----------------------------------------------------------------------------


class ThreadedConsole(ConsoleTransport):
    """The console, handed texts on the worker threads as a network transport is."""

    in_process = False


def dispatch_ours(
    factory: so.sessionmaker[so.Session], care: CareContext, *, threaded: bool = False
) -> int:
    kind = ThreadedConsole if threaded else ConsoleTransport
    transport = kind(stream=io.StringIO(), file_path=None)
    with (
        factory() as session,
        Dispatcher(
            transport=transport, care=care, clock=FakeClock(NOW), owner="bench",
            concurrency=DEFAULT_CONCURRENCY,
        ) as dispatcher,
    ):  # fmt: skip
        return dispatcher.dispatch(session).sent


# The job-per-text design's job: everything it needs comes from module globals, as a
# pickled job's reference to a function would find it.
_JOB: dict[str, Any] = {}


def send_job(message_id: int) -> None:
    """Render one text, hand it to the console transport, record it sent (one commit)."""
    care: CareContext = _JOB["care"]
    with _JOB["factory"]() as session:
        message, patient, procedure = session.execute(
            sa.select(Message, Patient, Procedure)
            .join(Patient, Patient.id == Message.patient_id)
            .join(Procedure, Procedure.id == Message.procedure_id)
            .where(Message.id == message_id)
        ).one()
        body = care.render_text(
            kind=procedure.kind, step_key=message.step, language=patient.language,
            tz=zone(patient.timezone), completed_at=procedure.completed_at,
            blood_thinner=procedure.blood_thinner,
        )  # fmt: skip
        result = _JOB["transport"].send(
            OutgoingSms(message_id=message.id, step=message.step, to=patient.phone, body=body,
                        now=NOW, due_at=message.due_at)
        )  # fmt: skip
        message.status, message.provider_sid, message.sent_at = "sent", result.provider_sid, NOW
        message.body, message.to_phone, message.updated_at = body, patient.phone, NOW
        session.commit()
    with _JOB["lock"]:
        _JOB["done"] += 1
        if _JOB["done"] == _JOB["expected"]:
            _JOB["finished"].set()


def dispatch_apscheduler(
    scheduler: Any, factory: so.sessionmaker[so.Session], care: CareContext
) -> int:
    """The due texts' jobs, run by the scheduler: from start until the last one finished."""
    with factory() as session:
        due = session.scalar(
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.status == "pending", Message.due_at <= NOW)
        )
    _JOB.update(
        care=care, factory=factory, transport=ConsoleTransport(stream=io.StringIO()),
        lock=threading.Lock(), done=0, expected=due, finished=threading.Event(),
    )  # fmt: skip
    start = time.perf_counter()
    scheduler.resume()
    _JOB["finished"].wait(600)
    _JOB["elapsed"] = time.perf_counter() - start
    scheduler.shutdown(wait=True)
    return int(_JOB["done"])


# --- main ---------------------------------------------------------------------------------


def sample(
    args: argparse.Namespace, folder: Path, label: str, i: int
) -> tuple[str, sa.Engine, so.sessionmaker[so.Session]]:
    url = fresh(args.database_url, args.reset, folder, f"{label}{i}")
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as session:
        seed(session, args.sample, random.Random(i))
    return url, engine, factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop the PostgreSQL schema first")
    parser.add_argument("--procedures", type=int, default=100_000)
    parser.add_argument(
        "--sample", type=int, default=5_000, help="procedures in the side-by-side runs"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--peer-engine", choices=("ours", "default"), default="ours",
        help="the job store's engine: ours (WAL on SQLite) or APScheduler's default",
    )  # fmt: skip
    args = parser.parse_args()
    PEER_ENGINE["engine"] = args.peer_engine

    care = build_care(Settings())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.procedures:
            url = fresh(args.database_url, args.reset, folder, "main")
            engine = make_engine(url)
            factory = make_session_factory(engine)
            with factory() as session:
                _, seconds = timed(
                    lambda: (seed(session, args.procedures, random.Random(42)), 0)[1]
                )
            print(
                f"backend {engine.dialect.name}: seeded {args.procedures:,} procedures in {seconds:.1f} s (never analyzed)"
            )
            planned, plan_s = timed(lambda: plan_set_based(factory, care))
            print(
                f"plan     {planned:>9,} texts in {plan_s:6.1f} s = {planned / plan_s:>9,.0f} texts/s"
            )
            sent, dispatch_s = timed(lambda: dispatch_ours(factory, care))
            print(
                f"dispatch {sent:>9,} texts in {dispatch_s:6.1f} s = {sent / dispatch_s:>9,.0f} texts/s (console transport)"
            )
            engine.dispose()

        figures: dict[str, list[float]] = {
            k: [] for k in ("plan", "naive", "jobs", "send", "jobsend", "threaded")
        }
        for i in range(args.repeat):
            url, engine, factory = sample(args, folder, "set", i)
            count, seconds = timed(lambda f=factory: plan_set_based(f, care))
            figures["plan"].append(count / seconds)
            count, seconds = timed(lambda f=factory: dispatch_ours(f, care))
            figures["send"].append(count / seconds)
            engine.dispose()

            url, engine, factory = sample(args, folder, "threaded", i)
            plan_set_based(factory, care)
            count, seconds = timed(lambda f=factory: dispatch_ours(f, care, threaded=True))
            figures["threaded"].append(count / seconds)
            engine.dispose()

            url, engine, factory = sample(args, folder, "naive", i)
            count, seconds = timed(lambda f=factory: plan_one_by_one(f, care))
            figures["naive"].append(count / seconds)
            engine.dispose()

            url, engine, factory = sample(args, folder, "jobs", i)
            plan_set_based(factory, care)  # the texts' rows: what the jobs name and record
            scheduler = job_scheduler(url)
            scheduler.start(paused=True)
            count = plan_apscheduler_jobs(scheduler, factory, care)
            figures["jobs"].append(count / _JOB["plan_elapsed"])
            count = dispatch_apscheduler(scheduler, factory, care)
            figures["jobsend"].append(count / _JOB["elapsed"])
            engine.dispose()
            print(
                f"  run {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in figures.items()),
                flush=True,
            )
        plan, naive, jobs, send, jobsend, threaded = (
            statistics.median(v) for v in figures.values()
        )
        print(f"side by side on {args.sample:,} procedures, median of {args.repeat} runs (texts per second); "
              f"job store on {args.peer_engine} engine:")  # fmt: skip
        print(f"  planning: set-based outbox (ours) {plan:>9,.0f}")
        print(f"            one INSERT per text      {naive:>9,.0f}   ours is {plan / naive:5.1f}x")
        print(f"            APScheduler job per text {jobs:>9,.0f}   ours is {plan / jobs:5.1f}x")
        print(f"  dispatch: our dispatcher           {send:>9,.0f}")
        print(
            f"            APScheduler job per text {jobsend:>9,.0f}   ours is {send / jobsend:5.1f}x"
        )
        print(
            f"            ours, console on {DEFAULT_CONCURRENCY} worker threads {threaded:>6,.0f}"
            f"   {threaded / jobsend:5.1f}x (as a network transport is called)"
        )


if __name__ == "__main__":
    main()

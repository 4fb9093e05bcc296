"""Plan 100,000 procedures and dispatch their due texts; print texts per second per phase.

Peers, measured in the same run on a smaller sample (medians of --repeat runs):
- planning one text at a time (an ORM add + flush per text: a query per text), and
- APScheduler's one pickled job per text in a SQLAlchemyJobStore (the design DESIGN.md
  argues against), against our set-based planning of the same sample.

    python bench/plan_dispatch.py                       # SQLite in a temporary folder
    python bench/plan_dispatch.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
import sqlalchemy.orm as so

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database  # noqa: E402
from followup.care.planner import plan_procedure  # noqa: E402
from followup.care.timing import zone  # noqa: E402
from followup.db import make_engine, make_session_factory  # noqa: E402
from followup.messaging.dispatch import dispatch_due  # noqa: E402
from followup.messaging.models import Message  # noqa: E402
from followup.messaging.outbox import plan_procedures  # noqa: E402
from followup.messaging.transports.console import ConsoleTransport  # noqa: E402
from followup.patients.models import Patient, Procedure  # noqa: E402
from followup.runtime import build_care  # noqa: E402
from followup.settings import Settings  # noqa: E402

# A Tuesday at 15:00 in New York: every no-driving text is due, none in quiet hours.
NOW = datetime(2026, 6, 2, 19, 0, tzinfo=UTC)
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")


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


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - start


def plan_set_based(factory: so.sessionmaker[so.Session], care: object) -> int:
    planned = 0
    with factory() as session:
        while True:
            report = plan_procedures(session=session, care=care, now=NOW)  # type: ignore[arg-type]
            session.commit()
            planned += report.planned + report.expired
            if report.procedures == 0:
                return planned


def plan_one_by_one(factory: so.sessionmaker[so.Session], care: object) -> int:
    """The peer: a query per text (ORM add + flush each), as a naive planner would."""
    planned = 0
    with factory() as session:
        rows = session.execute(
            sa.select(Procedure, Patient.timezone)
            .join(Patient)
            .where(Procedure.planned_at.is_(None))
        ).all()
        for procedure, tz_name in rows:
            for p in plan_procedure(
                protocol=care.protocol(procedure.kind),  # type: ignore[attr-defined]
                completed_at=procedure.completed_at,
                tz=zone(tz_name),
                has_blood_thinner=procedure.blood_thinner is not None,
                quiet_hours=care.quiet_hours,  # type: ignore[attr-defined]
                now=NOW,
            ):
                session.add(
                    Message(
                        procedure_id=procedure.id, patient_id=procedure.patient_id, step=p.step,
                        due_at=p.due_at, expires_at=p.expires_at, status=p.status, attempts=0,
                        created_at=NOW, updated_at=NOW,
                    )
                )  # fmt: skip
                session.flush()
                planned += 1
            procedure.planned_at = NOW
        session.commit()
    return planned


def plan_apscheduler_jobs(url: str, factory: so.sessionmaker[so.Session], care: object) -> int:
    """The peer DESIGN.md rejects: one pickled APScheduler job per text in the database."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url, tablename="bench_apscheduler_jobs")},
        timezone="UTC",
    )
    scheduler.start(paused=True)
    planned = 0
    try:
        with factory() as session:
            rows = session.execute(sa.select(Procedure, Patient.timezone).join(Patient)).all()
        for procedure, tz_name in rows:
            for p in plan_procedure(
                protocol=care.protocol(procedure.kind),  # type: ignore[attr-defined]
                completed_at=procedure.completed_at,
                tz=zone(tz_name),
                has_blood_thinner=procedure.blood_thinner is not None,
                quiet_hours=care.quiet_hours,  # type: ignore[attr-defined]
                now=NOW,
            ):
                # Shifted into the future so the paused scheduler never fires: only the
                # cost of storing one pickled job per text is measured.
                scheduler.add_job(
                    print, "date", run_date=p.due_at + timedelta(days=3650), args=(procedure.id, p.step),
                    id=f"{procedure.id}:{p.step}", misfire_grace_time=None,
                )  # fmt: skip
                planned += 1
    finally:
        scheduler.shutdown(wait=True)
    return planned


def dispatch_all(factory: so.sessionmaker[so.Session], care: object, batch: int) -> int:
    transport = ConsoleTransport(stream=io.StringIO(), file_path=None)
    sent = 0
    with factory() as session:
        while True:
            report = dispatch_due(
                session=session, transport=transport, care=care, now=NOW,  # type: ignore[arg-type]
                owner="bench", limit=batch,
            )  # fmt: skip
            sent += report.sent
            transport._stream = io.StringIO()  # noqa: SLF001 - keep memory flat
            if report.claimed == 0:
                return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop the PostgreSQL schema first")
    parser.add_argument("--procedures", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=2_000, help="procedures in the peer runs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="dispatch batch size")
    args = parser.parse_args()

    care = build_care(Settings())
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = fresh_database(args.database_url, args.reset, folder, "main")
        engine = make_engine(url)
        factory = make_session_factory(engine)
        backend = engine.dialect.name
        with factory() as session:
            _, seconds = timed(lambda: (seed(session, args.procedures, rng), args.procedures)[1])
        print(f"backend {backend}: seeded {args.procedures:,} procedures in {seconds:.1f} s")

        planned, plan_s = timed(lambda: plan_set_based(factory, care))
        print(
            f"plan     {planned:>9,} texts in {plan_s:6.1f} s = {planned / plan_s:>9,.0f} texts/s"
        )
        with engine.connect() as conn:
            due = conn.scalar(
                sa.select(sa.func.count())
                .select_from(Message)
                .where(Message.status == "pending", Message.due_at <= NOW)
            )
        sent, dispatch_s = timed(lambda: dispatch_all(factory, care, args.batch))
        print(
            f"dispatch {sent:>9,} texts in {dispatch_s:6.1f} s = {sent / dispatch_s:>9,.0f} texts/s (due: {due:,})"
        )
        engine.dispose()

        # Peers on a smaller sample, same machine, same run; medians of --repeat runs.
        ours, naive, jobs = [], [], []
        for i in range(args.repeat):
            for label, runner, bucket in (
                ("set", lambda f, u: plan_set_based(f, care), ours),
                ("naive", lambda f, u: plan_one_by_one(f, care), naive),
                ("apscheduler", lambda f, u: plan_apscheduler_jobs(u, f, care), jobs),
            ):
                sample_url = fresh_database(args.database_url, args.reset, folder, f"{label}{i}")
                sample_engine = make_engine(sample_url)
                sample_factory = make_session_factory(sample_engine)
                with sample_factory() as session:
                    seed(session, args.sample, random.Random(i))
                count, seconds = timed(lambda r=runner, f=sample_factory, u=sample_url: r(f, u))
                bucket.append(count / seconds)
                sample_engine.dispose()
        ours_m, naive_m, jobs_m = (statistics.median(x) for x in (ours, naive, jobs))
        print(
            f"peers on {args.sample:,} procedures, median of {args.repeat} runs (texts planned per second):"
        )
        print(f"  set-based outbox (ours)       {ours_m:>9,.0f}")
        print(f"  one INSERT per text           {naive_m:>9,.0f}  ours is {ours_m / naive_m:.1f}x")
        print(f"  APScheduler job per text      {jobs_m:>9,.0f}  ours is {ours_m / jobs_m:.1f}x")


if __name__ == "__main__":
    main()

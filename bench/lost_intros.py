"""The lost-intro sweep at scale: `replan_lost_intros` in its steady state.

The planner job (and `followup tick`) calls `replan_lost_intros` every minute over the
whole outbox, so what matters is its cost when there is nothing to re-plan, and whether
that cost follows the texts still to go (a clinic's week) or the history (every text
ever sent). For each --procedures scale, on a fresh database, the bench

- enrolls --per-day completed procedures a day, going back as many days as it takes
  (20,000 is 143 days, 100,000 is 715 days at 140 a day; one patient each), plus a third
  as many a day booked for the next 7 days, enrolled a week before their date. Each
  day's procedures are planned by the real `plan_procedures` at 13:00 UTC that day, before
  any of them is completed (a booked one at its enrollment), so every text has the times
  the service gives it. At a fixed --per-day the texts still to go are the same at every
  scale: what grows from one scale to the next is the history alone;
- turns that into the history the service would leave at NOW (a Tuesday at noon in New
  York), with set-based UPDATEs: every text due before NOW went out (96.5% delivered,
  with a provider SID, `sent` and `status-callback` events; 1% undelivered with a SID;
  1.5% expired without one, half of those after a refusal; 1% cancelled by a change);
  one patient in 50 sent STOP a day after their procedure (their later texts cancelled).
  The texts due after NOW stay pending: the last 7 days' procedures and the booked ones.
  An introduction that expired unsent while its procedure still has texts to go is what
  the sweep re-plans, so those the seeding made are marked delivered; in their place it
  plants --lost real lost intros (the intro text expired after a refusal, no SID, later
  texts pending) and --maybe whose request's outcome came back unknown before they
  expired (`maybe_at_provider`: found by every sweep, never re-planned);
- runs VACUUM ANALYZE on PostgreSQL (autovacuum's work on a table that has lived) and
  ANALYZE on SQLite, then times `replan_lost_intros`, each call in a session and
  transaction of its own committed like the job's: the first call (it re-plans the lost
  intros), then --repeat calls with nothing to re-plan (median and p95). The last call's
  statements, captured with a `before_cursor_execute` listener, are then replayed alone
  (median ms, every row fetched) and their plans printed: EXPLAIN (ANALYZE, BUFFERS) on
  PostgreSQL, EXPLAIN QUERY PLAN on SQLite.

    python bench/lost_intros.py                          # SQLite in a temporary folder
    python bench/lost_intros.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
import sqlalchemy.orm as so

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database  # noqa: E402
from followup.care.protocol import CareContext  # noqa: E402
from followup.db import make_engine, make_session_factory  # noqa: E402
from followup.messaging.lost_intros import replan_lost_intros  # noqa: E402
from followup.messaging.models import Message, MessageEvent  # noqa: E402
from followup.messaging.outbox import plan_procedures  # noqa: E402
from followup.patients.models import Patient, Procedure  # noqa: E402
from followup.runtime import build_care  # noqa: E402
from followup.settings import Settings  # noqa: E402

# A Tuesday at noon in New York: the planner job's clock, pinned.
NOW = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
BOOKED_DAYS = 7
BODY = (
    "Hi Bench, this is the spine clinic. Please do not drive today. Reply with a number "
    "from 0 to 10 to tell us your pain, or call us any time at (202) 555-0100. Reply HELP "
    "for help, STOP to stop these texts. Msg & data rates may apply."
)
MESSAGES = cast(sa.Table, Message.__table__)
EVENTS = cast(sa.Table, MessageEvent.__table__)
PATIENTS = cast(sa.Table, Patient.__table__)
PROCEDURES = cast(sa.Table, Procedure.__table__)


# --- the history ---------------------------------------------------------------------------


def enroll_and_plan(
    session: so.Session, care: CareContext, procedures: int, per_day: int, rng: random.Random
) -> int:
    """Enroll the procedures day by day, each day's planned by the real planner (as its job
    would, once they are in) at 13:00 UTC that day, before any completion; return the
    number of texts planned."""
    groups: dict[datetime, list[dict[str, Any]]] = defaultdict(list)
    today = NOW.replace(hour=13, minute=0)  # 8:00 in New York, 5:00 in Los Angeles
    for i in range(procedures):  # completed, the newest first
        day = today - timedelta(days=i // per_day)
        span = 235 if day == today else 540  # today's up to 16:55 UTC, else to 22:00
        completed = day + timedelta(minutes=rng.randrange(span))
        groups[day].append({"status": "completed", "completed_at": completed})
    for i in range(BOOKED_DAYS * per_day // 3):  # booked, enrolled a week before
        day = today + timedelta(days=1 + i % BOOKED_DAYS)
        scheduled = day + timedelta(minutes=rng.randrange(540))
        groups[day - timedelta(days=BOOKED_DAYS)].append(
            {"status": "scheduled", "scheduled_at": scheduled}
        )
    texts = 0
    number = 0
    for instant in sorted(groups):
        rows = groups[instant]
        enrolled = instant - timedelta(hours=1)
        patients = [
            {
                "first_name": "Bench",
                "last_name": f"Patient{number + i}",
                "phone": f"+1202{(number + i) % 10_000_000:07d}",
                "timezone": ZONES[(number + i) % len(ZONES)],
                "language": "en" if (number + i) % 5 else "es",
                "sms_consent_at": enrolled,
                "created_at": enrolled,
            }
            for i in range(len(rows))
        ]
        number += len(rows)
        ids = session.scalars(
            sa.insert(Patient).returning(Patient.id, sort_by_parameter_order=True), patients
        ).all()
        session.execute(
            sa.insert(Procedure),
            [
                {
                    "completed_at": None,
                    "scheduled_at": None,
                    **row,
                    "patient_id": pid,
                    "kind": "kyphoplasty" if pid % 2 else "vertebroplasty",
                    "takes_blood_thinner": row["status"] == "completed" and pid % 3 == 0,
                    "blood_thinner": (
                        "Eliquis" if row["status"] == "completed" and pid % 3 == 0 else None
                    ),
                    "created_at": enrolled,
                }
                for row, pid in zip(rows, ids, strict=True)
            ],
        )
        session.commit()
        while True:
            report = plan_procedures(session=session, care=care, now=instant)
            session.commit()
            texts += report.planned + report.expired
            if report.procedures == 0:
                break
    return texts


def handed_over(sid: bool) -> dict[str, Any]:
    """What a text that went out at its due time carries (`sid`: the provider took it)."""
    m = MESSAGES.c
    values: dict[str, Any] = {
        "attempts": 1,
        "claimed_at": m.due_at,
        "handed_at": m.due_at,
        "updated_at": m.due_at,
        "body": BODY,
        "to_phone": "+12025550100",
    }
    if sid:
        values.update(
            provider_sid=sa.literal("SMbench") + sa.cast(m.id, sa.String),
            sent_at=m.due_at,
            segments=2,
        )
    return values


def settle_history(session: so.Session) -> None:
    """Everything due before NOW went out, as the service would have left it."""
    m = MESSAGES.c
    p = PATIENTS.c
    # STOP: one patient in 50, a day after their procedure; their later texts cancelled.
    stops = [
        {"pid": pid, "at": completed + timedelta(hours=26)}
        for pid, completed in session.execute(
            sa.select(Procedure.patient_id, Procedure.completed_at).where(
                Procedure.status == "completed", Procedure.patient_id % 50 == 0
            )
        )
        if completed + timedelta(hours=26) < NOW
    ]
    if stops:
        session.execute(
            sa.update(PATIENTS)
            .where(p.id == sa.bindparam("pid"))
            .values(opted_out_at=sa.bindparam("at", type_=PATIENTS.c.opted_out_at.type)),
            stops,
        )
    opted_out = sa.select(p.opted_out_at).where(p.id == m.patient_id).scalar_subquery()
    session.execute(
        sa.update(MESSAGES)
        .where(
            m.status == "pending",
            m.patient_id.in_(sa.select(p.id).where(p.opted_out_at.is_not(None))),
            m.due_at > opted_out,
        )
        .values(status="cancelled", updated_at=opted_out)
    )
    # The rest of what was due went out: buckets by a hash of the id.
    bucket = (m.id * sa.literal_column("2654435761")) % 1000
    due = sa.and_(m.status == "pending", m.due_at < NOW)
    session.execute(
        sa.update(MESSAGES)
        .where(due, bucket < 15)
        .values(
            status="expired",
            attempts=bucket % 2,
            error_code=sa.case((bucket % 2 == 1, "20429"), else_=None),
            updated_at=m.expires_at,
        )
    )
    session.execute(
        sa.update(MESSAGES)
        .where(due, bucket < 25)
        .values(status="undelivered", error_code="30005", **handed_over(sid=True))
    )
    session.execute(
        sa.update(MESSAGES).where(due, bucket < 35).values(status="cancelled", updated_at=m.due_at)
    )
    session.execute(
        sa.update(MESSAGES)
        .where(due)
        .values(status="delivered", delivered_at=m.due_at, **handed_over(sid=True))
    )
    # An intro that expired unsent while its procedure has texts to go is the sweep's work:
    # the service would have re-planned it, so none is left but those planted below.
    other = MESSAGES.alias("other")
    session.execute(
        sa.update(MESSAGES)
        .where(
            m.status == "expired",
            m.provider_sid.is_(None),
            sa.exists().where(PROCEDURES.c.id == m.procedure_id, PROCEDURES.c.intro_step == m.step),
            m.procedure_id.in_(sa.select(other.c.procedure_id).where(other.c.status == "pending")),
        )
        .values(status="delivered", delivered_at=m.due_at, error_code=None, **handed_over(sid=True))
    )
    # Their events, after the planner's `planned` ones.
    for kind, status, when, where in (
        ("sent", "sent", m.sent_at, m.provider_sid.is_not(None)),
        ("status-callback", "delivered", m.delivered_at, m.status == "delivered"),
        ("status-callback", "undelivered", m.due_at, m.status == "undelivered"),
        ("expired", "expired", m.expires_at, m.status == "expired"),
        ("cancelled", "cancelled", m.updated_at, m.status == "cancelled"),
    ):
        session.execute(
            sa.insert(EVENTS).from_select(
                ["message_id", "at", "kind", "status", "detail"],
                sa.select(m.id, when, sa.literal(kind), sa.literal(status), sa.literal("bench"))
                .where(where)
                .order_by(m.id),
            )
        )
    session.commit()


def plant_lost(session: so.Session, lost: int, maybe: int) -> list[int]:
    """Lost intros: the intro text of a procedure with texts to go expired without a SID
    after a refusal (`maybe` of them after a request whose outcome came back unknown)."""
    m = MESSAGES.c
    other = MESSAGES.alias("other")
    candidates = session.execute(
        sa.select(m.id)
        .join(PROCEDURES, sa.and_(PROCEDURES.c.id == m.procedure_id, PROCEDURES.c.intro_step == m.step))
        .join(PATIENTS, PATIENTS.c.id == PROCEDURES.c.patient_id)
        .where(
            m.status == "delivered",
            PATIENTS.c.opted_out_at.is_(None),
            m.procedure_id.in_(sa.select(other.c.procedure_id).where(other.c.status == "pending")),
        )
        .order_by(m.id)
    ).scalars().all()  # fmt: skip
    count = min(lost + maybe, len(candidates))
    chosen = [candidates[i * len(candidates) // count] for i in range(count)] if count else []
    if not chosen:
        return []
    session.execute(
        sa.delete(EVENTS).where(EVENTS.c.message_id.in_(chosen), EVENTS.c.kind != "planned")
    )
    session.execute(
        sa.update(MESSAGES)
        .where(m.id.in_(chosen))
        .values(
            status="expired", provider_sid=None, sent_at=None, delivered_at=None, segments=None,
            error_code="20429", updated_at=m.expires_at,
        )
    )  # fmt: skip
    unknown = chosen[lost:]
    events = [
        {"message_id": mid, "at": NOW - timedelta(days=1), "kind": "outcome-unknown",
         "status": "sending", "detail": "the request's outcome is unknown (bench)"}
        for mid in unknown
    ] + [
        {"message_id": mid, "at": NOW - timedelta(hours=12), "kind": "expired",
         "status": "expired", "detail": "error 20429; no retry fits before its expiry"}
        for mid in chosen
    ]  # fmt: skip
    session.execute(sa.insert(MessageEvent), events)
    session.commit()
    return chosen


def describe(session: so.Session) -> str:
    m = MESSAGES.c
    counts = dict(session.execute(sa.select(m.status, sa.func.count()).group_by(m.status)).all())
    waiting = session.scalar(
        sa.select(sa.func.count(sa.distinct(m.procedure_id))).where(m.status == "pending")
    )
    events = session.scalar(sa.select(sa.func.count()).select_from(EVENTS))
    total = sum(counts.values())
    by_status = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (
        f"{total:,} texts ({by_status}); {waiting:,} procedures with texts pending; "
        f"{events:,} events"
    )


def settle_statistics(engine: sa.Engine) -> None:
    """What a database that has lived would have: autovacuum's VACUUM and ANALYZE."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


# --- measuring -----------------------------------------------------------------------------


class Statements:
    """The statements a call runs, with their parameters (a cursor-execute listener)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.seen: list[tuple[str, Any]] = []
        sa.event.listen(engine, "before_cursor_execute", self.before)

    def before(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.seen.append((statement, parameters))

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self.before)


def label(statement: str) -> str:
    s = " ".join(statement.split())
    if s.startswith(("SELECT DISTINCT messages.procedure_id", "SELECT messages.procedure_id")):
        return "pending texts' procedures"
    if "FROM procedures" in s and "message_events" not in s:
        return "lost intros (locked)" if "FOR UPDATE" in s else "lost intros"
    if "FROM message_events" in s:
        return "maybe at the provider"
    return s[:60]


def sweep(factory: so.sessionmaker[so.Session], care: CareContext) -> tuple[int, float]:
    """One run of the sweep as the planner job runs it: its own session, committed."""
    start = time.perf_counter()
    with factory() as session:
        count = replan_lost_intros(session=session, care=care, now=NOW)
        session.commit()
    return count, (time.perf_counter() - start) * 1000


def replay(engine: sa.Engine, statement: str, parameters: Any, repeat: int) -> float:
    """Median ms of the statement run and all its rows fetched (SQLite reads the rows as
    they are fetched: a cursor listener times only the first), in a rolled-back transaction."""
    samples = []
    with engine.connect() as conn:
        for _ in range(repeat):
            start = time.perf_counter()
            conn.exec_driver_sql(statement, parameters).all()
            samples.append(time.perf_counter() - start)
            conn.rollback()
    return statistics.median(samples) * 1000


def explain(engine: sa.Engine, captured: list[tuple[str, Any]]) -> None:
    postgres = engine.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    for statement, parameters in captured:
        print(f"  -- {label(statement)}")
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            conn.rollback()  # EXPLAIN ANALYZE runs the statement: its locks go with it
        depth: dict[int, int] = {0: 0}
        for row in rows:
            if postgres:
                print(f"    {row[0]}")
            else:  # id, parent, notused, detail
                depth[row[0]] = depth.get(row[1], 0) + 1
                print(f"    {'  ' * (depth[row[0]] - 1)}{row[3]}")


def run(args: argparse.Namespace, folder: Path, procedures: int, care: CareContext) -> dict:
    url = fresh_database(args.database_url, args.reset, folder, f"lost{procedures}")
    engine = make_engine(url)
    factory = make_session_factory(engine)
    backend = engine.dialect.name
    start = time.perf_counter()
    with factory() as session:
        texts = enroll_and_plan(session, care, procedures, args.per_day, random.Random(procedures))
        planned_s = time.perf_counter() - start
        settle_history(session)
        planted = plant_lost(session, args.lost, args.maybe)
        summary = describe(session)
    settle_statistics(engine)
    days = -(-procedures // args.per_day)
    print(
        f"\n{backend}: {procedures:,} completed procedures over {days} days ({texts:,} texts "
        f"planned in {planned_s:.0f} s), history settled in {time.perf_counter() - start - planned_s:.0f} s\n  {summary}\n"
        f"  planted {min(args.lost, len(planted))} lost intros and "
        f"{max(0, len(planted) - args.lost)} maybe at the provider"
    )

    first_count, first_ms = sweep(factory, care)
    print(f"  first call: re-planned {first_count} in {first_ms:.1f} ms")
    statements = Statements(engine)
    samples: list[float] = []
    counts: set[int] = set()
    for _ in range(args.repeat):
        statements.seen.clear()
        count, ms = sweep(factory, care)
        samples.append(ms)
        counts.add(count)
    statements.close()
    captured = list(statements.seen)  # the last call's
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    print(
        f"  steady state, {args.repeat} calls (re-planned {sorted(counts)}): "
        f"median {median:.1f} ms, p95 {p95:.1f} ms; its statements replayed alone:"
    )
    for statement, parameters in captured:
        print(
            f"    {label(statement):<28} median {replay(engine, statement, parameters, args.repeat):7.2f} ms"
        )
    if args.explain:
        print("  plans of one steady-state call:")
        explain(engine, captured)
    engine.dispose()
    return {
        "backend": backend,
        "procedures": procedures,
        "first": first_ms,
        "median": median,
        "p95": p95,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop the PostgreSQL schema first")
    parser.add_argument(
        "--procedures", type=int, nargs="+", default=[20_000, 100_000],
        help="completed procedures in the history, one fresh database per scale",
    )  # fmt: skip
    parser.add_argument("--per-day", type=int, default=140, help="procedures completed a day")
    parser.add_argument("--lost", type=int, default=20, help="lost intros to re-plan")
    parser.add_argument("--maybe", type=int, default=2, help="expired intros maybe at the provider")
    parser.add_argument("--repeat", type=int, default=20, help="steady-state calls timed")
    parser.add_argument("--no-explain", dest="explain", action="store_false")
    args = parser.parse_args()

    care = build_care(Settings())
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(args, Path(tmp), n, care) for n in args.procedures]
    print("\nreplan_lost_intros, ms per call (steady state: nothing to re-plan):")
    for r in results:
        print(
            f"  {r['backend']:<10} {r['procedures']:>9,} procedures: first {r['first']:7.1f}, "
            f"median {r['median']:6.1f}, p95 {r['p95']:6.1f}"
        )


if __name__ == "__main__":
    main()

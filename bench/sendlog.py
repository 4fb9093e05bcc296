"""The admins' send log at scale: 1,000,000 texts over 100,000 patients.

Fills a database (two procedures a patient, five texts each, spread over two years, as a
clinic's history would be), then measures through the Flask test client, signed in as an
admin: the log's first page, a filtered page, a deep page (200 pages in, by cursor) and
the dashboard, printing p50/p95 per request; and the CSV export's peak memory while it
streams every row. Run it on SQLite and on PostgreSQL:

    python bench/sendlog.py                                   # SQLite in a temporary folder
    python bench/sendlog.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database  # noqa: E402
from followup.clock import FakeClock  # noqa: E402
from followup.db import make_engine  # noqa: E402
from followup.migrate import alembic_config  # noqa: E402
from followup.models import Message, MessageEvent, Patient, Procedure  # noqa: E402
from followup.settings import Settings  # noqa: E402

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
SPAN = timedelta(days=730)
STEPS = ("no-driving", "soreness", "blood-thinner-restart", "warning-signs", "pain-check")
OFFSETS = (
    timedelta(0),
    timedelta(hours=20),
    timedelta(hours=48),
    timedelta(days=3),
    timedelta(days=7),
)
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
ERRORS = ("30005", "30006", "21614", "30003", "21211")


def fill(url: str, patients: int, rng: random.Random) -> int:
    """Insert the history in chunks with Core executemany; return the number of texts."""
    engine = make_engine(url)
    texts = 0
    chunk = 5_000
    with engine.begin() as conn:
        for start in range(0, patients, chunk):
            count = min(chunk, patients - start)
            conn.execute(
                sa.insert(Patient),
                [
                    {
                        "id": start + i + 1, "first_name": f"First{start + i}",
                        "last_name": f"Last{(start + i) * 7919 % 100_003}",
                        "phone": f"+1202{(start + i) % 10_000_000:07d}",
                        "timezone": ZONES[(start + i) % 4], "language": "en",
                        "sms_consent_at": NOW - SPAN, "created_at": NOW - SPAN,
                        "opted_out_at": NOW - timedelta(days=rng.randint(0, 700)) if rng.random() < 0.02 else None,
                    }
                    for i in range(count)
                ],
            )  # fmt: skip
            procedures, messages, events = [], [], []
            for i in range(count):
                patient_id = start + i + 1
                for k in range(2):
                    procedure_id = 2 * (patient_id - 1) + k + 1
                    completed = NOW - SPAN * rng.random()
                    procedures.append({
                        "id": procedure_id, "patient_id": patient_id, "kind": "kyphoplasty",
                        "status": "completed", "completed_at": completed, "takes_blood_thinner": True, "blood_thinner": "Eliquis",
                        "planned_at": completed, "created_at": completed,
                    })  # fmt: skip
                    for step, offset in zip(STEPS, OFFSETS, strict=True):
                        texts += 1
                        due = completed + offset
                        roll = rng.random()
                        if due > NOW:
                            status, sent, delivered, error = "pending", None, None, None
                        elif roll < 0.90:
                            status, sent, delivered, error = (
                                "delivered",
                                due,
                                due + timedelta(seconds=5),
                                None,
                            )
                        elif roll < 0.95:
                            status, sent, delivered, error = (
                                "failed",
                                None,
                                None,
                                rng.choice(ERRORS),
                            )
                        elif roll < 0.98:
                            status, sent, delivered, error = "expired", None, None, None
                        else:
                            status, sent, delivered, error = "undelivered", due, None, "30003"
                        messages.append({
                            "id": texts, "procedure_id": procedure_id, "patient_id": patient_id,
                            "step": step, "due_at": due, "expires_at": due + timedelta(hours=10),
                            "status": status, "attempts": 0 if status == "pending" else 1,
                            "sent_at": sent, "delivered_at": delivered, "error_code": error,
                            "provider_sid": f"SM{texts:032d}" if sent else None,
                            "created_at": completed, "updated_at": delivered or sent or due,
                        })  # fmt: skip
                        events.append(
                            {
                                "message_id": texts,
                                "at": completed,
                                "kind": "planned",
                                "status": "pending",
                            }
                        )
                        if status != "pending":
                            events.append(
                                {"message_id": texts, "at": due, "kind": status, "status": status}
                            )
            conn.execute(sa.insert(Procedure), procedures)
            conn.execute(sa.insert(Message), messages)
            conn.execute(sa.insert(MessageEvent), events)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
            for table in ("patients", "procedures", "messages", "message_events"):
                conn.execute(
                    # Table names from the literal tuple above, not input.
                    sa.text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")  # noqa: S608
                )
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return texts


def reset_peak_rss() -> None:
    """Start measuring peak memory from here (Linux: clear the resident high-water mark)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """The process's peak resident memory since reset_peak_rss, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


def measure(label: str, fn: Callable[[], Any], repeat: int) -> None:
    fn()  # warm the caches once, as a server that has been up would be
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    print(f"  {label:<34} {percentiles(samples)}   (n={repeat})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop the PostgreSQL schema first")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--reuse", action="store_true", help="measure the data already in --database-url"
    )
    args = parser.parse_args()

    from followup.accounts.service import create_user
    from followup.app import create_app
    from followup.runtime import build_runtime

    with tempfile.TemporaryDirectory() as tmp:
        if args.reuse and args.database_url:
            url = args.database_url
            command.upgrade(alembic_config(url), "head")
            engine = make_engine(url)
            with engine.connect() as conn:
                texts = conn.scalar(sa.text("SELECT count(*) FROM messages")) or 0
                conn.execute(sa.text("DELETE FROM users"))
                conn.commit()
            engine.dispose()
            print(f"reusing {texts:,} texts")
        else:
            url = fresh_database(args.database_url, args.reset, Path(tmp), "sendlog")
            start = time.perf_counter()
            texts = fill(url, args.patients, random.Random(7))
            print(
                f"filled {texts:,} texts over {args.patients:,} patients in {time.perf_counter() - start:.0f} s"
            )

        settings = replace(Settings(), database_url=url, secret_key="bench-secret-key-0123456789")  # noqa: S106
        runtime = build_runtime(settings, FakeClock(NOW))
        print(f"backend {runtime.engine.dialect.name}")
        with runtime.session_factory() as session:
            create_user(session=session, email="admin@bench.example", role="admin",
                        password="bench-password-123", now=NOW, actor="bench")  # fmt: skip  # noqa: S106
            session.commit()
        app = create_app(settings, runtime=runtime)
        app.config.update(WTF_CSRF_ENABLED=False)
        client = app.test_client()
        response = client.post(
            "/login", data={"email": "admin@bench.example", "password": "bench-password-123"}
        )
        assert response.status_code in (302, 303), response.status_code

        def get(path: str) -> Any:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            return response

        first = get("/log").get_data(as_text=True)
        cursor = None
        path = "/log"
        for _ in range(200):  # walk 200 pages in to find a deep cursor
            page = get(path).get_data(as_text=True)
            marker = 'data-next-cursor="'
            if marker not in page:
                break
            cursor = page.split(marker, 1)[1].split('"', 1)[0]
            path = f"/log?cursor={cursor}"
        assert first and cursor, "the log page must carry data-next-cursor for the bench"
        week_ago = (NOW - timedelta(days=7)).date().isoformat()
        measure("log, first page", lambda: get("/log"), args.repeat)
        measure(
            "log, failed in the last 7 days",
            lambda: get(f"/log?status=failed&date_from={week_ago}"),
            args.repeat,
        )
        measure("log, search by last 4 digits", lambda: get("/log?q=0042"), args.repeat)
        measure("log, 200 pages deep (cursor)", lambda: get(f"/log?cursor={cursor}"), args.repeat)
        measure("dashboard", lambda: get("/"), args.repeat)

        reset_peak_rss()
        start = time.perf_counter()
        response = client.get("/log.csv")
        rows = sum(chunk.count(b"\n") for chunk in response.response) - 1
        seconds = time.perf_counter() - start
        response.close()
        print(
            f"  CSV export: {rows:,} rows in {seconds:.1f} s, "
            f"peak process memory (RSS) {peak_rss_mib():.0f} MiB"
        )
        runtime.engine.dispose()


if __name__ == "__main__":
    main()

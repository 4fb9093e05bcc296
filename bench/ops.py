"""Operations at scale: a /metrics scrape and the retention purge, at 1,000,000 texts.

Fills the send log benchmark's history (100,000 patients, two procedures each, five texts
a procedure, spread over two years), then measures:

- GET /metrics with the database figures (p50/p95 over --repeat scrapes), and the peer
  design it replaces: counting texts by status and step over the whole table;
- the first retention purge of that history (about one patient in five has had no
  procedure for 400 days), its dry run, then the daily purge that finds nothing new.

    python bench/ops.py                                   # SQLite in a temporary folder
    python bench/ops.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset
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
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database  # noqa: E402
from bench.sendlog import NOW, fill  # noqa: E402
from followup.clock import FakeClock  # noqa: E402
from followup.ops.metrics import RECENT_WINDOW  # noqa: E402
from followup.settings import Settings  # noqa: E402

TOKEN = "bench-metrics-token-0123456789"  # noqa: S105


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and p95 of `repeat` calls, in milliseconds, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return statistics.median(ordered) * 1000, p95 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop the PostgreSQL schema first")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    from followup.app import create_app
    from followup.messaging.models import Message
    from followup.retention.service import preview_purge, purge_expired
    from followup.runtime import build_runtime

    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database(args.database_url, args.reset, Path(tmp), "ops")
        start = time.perf_counter()
        texts = fill(url, args.patients, random.Random(7))
        print(
            f"filled {texts:,} texts over {args.patients:,} patients in {time.perf_counter() - start:.0f} s"
        )
        settings = replace(Settings(), database_url=url, metrics_token=TOKEN)
        runtime = build_runtime(settings, FakeClock(NOW))
        print(f"backend {runtime.engine.dialect.name}")
        app = create_app(settings, runtime=runtime)
        client = app.test_client()

        def scrape() -> None:
            response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200
            assert b"followup_database_up 1.0" in response.data

        from followup.ops.metrics import DatabaseCollector

        collector = DatabaseCollector(
            session_factory=runtime.session_factory, care=runtime.care, clock=runtime.clock
        )

        def database_figures() -> None:
            up, *figures = collector.collect()
            assert up.samples[0].value == 1 and figures  # read, not reported down

        def whole_table() -> None:
            with runtime.session_factory() as session:
                session.execute(
                    sa.select(Message.status, Message.step, sa.func.count()).group_by(
                        Message.status, Message.step
                    )
                ).all()

        def recent_window() -> None:
            # The collector's own query for followup_texts_recent.
            window = (
                sa.select(Message.status, Message.step)
                .where(Message.due_at >= NOW - RECENT_WINDOW)
                .cte("recent_texts")
                .prefix_with("MATERIALIZED")
            )
            with runtime.session_factory() as session:
                session.execute(
                    sa.select(window.c.status, window.c.step, sa.func.count()).group_by(
                        window.c.status, window.c.step
                    )
                ).all()

        medians = {}
        for label, fn, repeat in (
            ("GET /metrics, everything", scrape, args.repeat),
            ("the database figures alone", database_figures, args.repeat),
            ("texts by status and step, last 7 days", recent_window, args.repeat),
            ("peer: the same over the whole table", whole_table, max(5, args.repeat // 3)),
        ):
            p50, p95 = timed(fn, repeat)
            medians[label] = p50
            print(f"  {label:<40} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   (n={repeat})")
        ratio = (
            medians["peer: the same over the whole table"]
            / medians["texts by status and step, last 7 days"]
        )
        print(f"  texts by status and step: the 7-day window is {ratio:.0f}x faster (medians)")

        # What a purge removes: the fill leaves bodies and numbers out, sent texts have them.
        with runtime.engine.begin() as conn:
            conn.execute(
                sa.update(Message)
                .where(Message.sent_at.is_not(None))
                .values(body="Example Spine Clinic: " + "x" * 140, to_phone="+12025550143")
            )
        with runtime.session_factory() as session:
            start = time.perf_counter()
            preview = preview_purge(session=session, now=NOW, retention_days=400)
            dry = time.perf_counter() - start
            print(f"  purge --dry-run: {preview} in {dry:.1f} s")
            start = time.perf_counter()
            report = purge_expired(session=session, now=NOW, retention_days=400, actor="bench")
            first = time.perf_counter() - start
            print(
                f"  first purge: {report} in {first:.1f} s "
                f"({report.patients / first:,.0f} patients/s, {report.texts / first:,.0f} texts/s)"
            )
            daily50, _ = timed(
                lambda: purge_expired(session=session, now=NOW, retention_days=400, actor="bench"),
                max(3, args.repeat // 10),
            )
            print(f"  daily purge with nothing new        p50 {daily50:7.1f} ms")
        runtime.engine.dispose()


if __name__ == "__main__":
    main()

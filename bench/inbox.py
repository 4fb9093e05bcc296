"""Needs-attention queue benchmark: the header's counts (on every page), /attention and the
patients list with its flags, at a large, failure-heavy send log.

Fills a database with bench/sendlog.py's history (10 texts per patient over two years, 5%
failed, four in five of those with a "cannot receive texts" code: a worst case, since
nearly every patient then has an open "cannot receive texts" item), adds open replies,
then measures through the Flask test client, signed in as a nurse.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fresh_database  # noqa: E402
from bench.sendlog import NOW, fill, measure  # noqa: E402
from followup.clock import FakeClock  # noqa: E402
from followup.db import make_engine  # noqa: E402
from followup.models import InboundMessage  # noqa: E402
from followup.settings import Settings  # noqa: E402


def add_replies(url: str, patients: int, rng: random.Random) -> int:
    """One reply per 20 patients over the last two days; a fifth urgent, the rest to read."""
    engine = make_engine(url)
    rows = [
        {
            "patient_id": patient_id, "from_phone": f"+1202{patient_id % 10_000_000:07d}",
            "body": "my leg is numb" if n % 5 == 0 else "can I shower?",
            "provider_sid": f"SMreply{patient_id:026d}", "received_at": NOW - rng.random() * (NOW - NOW.replace(day=18)),
            "kind": "symptom" if n % 5 == 0 else "other", "needs_attention": True,
            "triage": "urgent" if n % 5 == 0 else "reading",
            "triage_reason": "new numbness or tingling" if n % 5 == 0 else "a question",
        }
        for n, patient_id in enumerate(range(1, patients + 1, 20))
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.insert(InboundMessage), rows)
    engine.dispose()
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop the PostgreSQL schema first")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    from followup.accounts.service import create_user
    from followup.app import create_app
    from followup.inbox.queue import queue_counts
    from followup.runtime import build_runtime

    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database(args.database_url, args.reset, Path(tmp), "inbox")
        start = time.perf_counter()
        texts = fill(url, args.patients, random.Random(7))
        replies = add_replies(url, args.patients, random.Random(8))
        print(
            f"filled {texts:,} texts and {replies:,} open replies over {args.patients:,} "
            f"patients in {time.perf_counter() - start:.0f} s"
        )
        settings = replace(Settings(), database_url=url, secret_key="bench-secret-key-0123456789")  # noqa: S106
        runtime = build_runtime(settings, FakeClock(NOW))
        print(f"backend {runtime.engine.dialect.name}")
        with runtime.session_factory() as session:
            create_user(session=session, email="nurse@bench.example", role="nurse",
                        password="bench-password-123", now=NOW, actor="bench")  # fmt: skip  # noqa: S106
            session.commit()
            counts = queue_counts(session=session, critical_steps=runtime.care.critical_steps())
        print(f"open items {counts.open:,}, urgent {counts.urgent:,}")
        app = create_app(settings, runtime=runtime)
        app.config.update(WTF_CSRF_ENABLED=False)
        client = app.test_client()
        response = client.post(
            "/login", data={"email": "nurse@bench.example", "password": "bench-password-123"}
        )
        assert response.status_code in (302, 303), response.status_code

        def get(path: str) -> Any:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            return response

        def counts_only() -> None:
            with runtime.session_factory() as session:
                queue_counts(session=session, critical_steps=runtime.care.critical_steps())

        measure("header counts (queue_counts)", counts_only, args.repeat)
        measure("patients list (flags, header)", lambda: get("/patients"), args.repeat)
        measure(
            "patients list, unreachable only",
            lambda: get("/patients?show=unreachable"),
            args.repeat,
        )
        measure("needs attention page", lambda: get("/attention"), args.repeat)
        runtime.engine.dispose()


if __name__ == "__main__":
    main()

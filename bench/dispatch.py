"""The dispatcher against a fake Twilio: throughput and lateness, beside the bare client.

Lateness is measured where it matters: the fake Twilio's receive time of each create,
minus the text's due time. The fake runs in its own process (HTTP/1.1 keep-alive, as
api.twilio.com), so it does not share this process's interpreter lock.

Scenarios, each a median of --repeat runs (a fresh database and a fresh fake each run):

1. **throughput**: --texts (10,000) texts due at one instant, one dispatcher pass in this
   process (the real TwilioTransport, the real clock), at 0 ms and 100 ms provider
   latency, for each --concurrency; beside the bare official `twilio` client sending the
   same texts from a thread pool of the same size (one client per thread).
2. **burst**: 1,000 texts due within the same second at 100 ms latency, sent by the
   running dispatcher loop (jobs.dispatcher.DispatchLoop) that sleeps until they are due.
3. **trickle**: texts due one by one (every 0.25 s), then texts written by another
   database connection as they fall due (an enrollment elsewhere) while the loop is idle.

    python bench/dispatch.py                        # SQLite in a temporary folder
    python bench/dispatch.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402
from followup.clock import SystemClock  # noqa: E402
from followup.db import make_engine, make_session_factory  # noqa: E402
from followup.messaging.dispatch import Dispatcher  # noqa: E402
from followup.messaging.models import Message  # noqa: E402
from followup.messaging.transports.twilio import TwilioTransport  # noqa: E402
from followup.patients.models import Patient, Procedure  # noqa: E402
from followup.runtime import build_care, build_runtime  # noqa: E402
from followup.settings import Settings  # noqa: E402

ACCOUNT_SID = "AC" + "f" * 32
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"  # noqa: S105 - the fake Twilio's own
FROM = "+12025550199"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fake_twilio(latency: float) -> Iterator[str]:
    """The fake Twilio in a process of its own; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "tests.fakes.twilio_server", "--port", str(port),
         "--latency", str(latency), "--keep-alive", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "fake Twilio at ...": it is listening
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def received(base_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base_url}/_fake/received.json", timeout=30) as answer:  # noqa: S310
        return list(json.loads(answer.read()))


def midday_zone() -> str:
    """A fixed-offset zone where it is early afternoon now: no quiet hours in the run."""
    offset = (13 - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    return f"Etc/GMT{-offset:+d}"


def seed(url: str, dues: list[datetime]) -> dict[str, datetime]:
    """One consented patient, completed procedure and pending no-driving text per due time;
    returns each phone's due time."""
    engine = make_engine(url)
    tz = midday_zone()
    now = datetime.now(UTC)
    phones = {f"+1202{i:07d}": due for i, due in enumerate(dues)}
    with engine.begin() as conn:
        patient_ids = conn.scalars(
            sa.insert(Patient).returning(Patient.id, sort_by_parameter_order=True),
            [
                {"first_name": "Bench", "last_name": f"P{i}", "phone": phone, "timezone": tz,
                 "language": "en", "sms_consent_at": now, "created_at": now}
                for i, phone in enumerate(phones)
            ],
        ).all()  # fmt: skip
        procedure_ids = conn.scalars(
            sa.insert(Procedure).returning(Procedure.id, sort_by_parameter_order=True),
            [
                {"patient_id": pid, "kind": "kyphoplasty", "status": "completed",
                 "completed_at": now - timedelta(minutes=5), "planned_at": now, "created_at": now}
                for pid in patient_ids
            ],
        ).all()  # fmt: skip
        conn.execute(
            sa.insert(Message),
            [
                {"procedure_id": proc, "patient_id": pid, "step": "no-driving", "due_at": due,
                 "expires_at": due + timedelta(hours=6), "status": "pending", "attempts": 0,
                 "created_at": now, "updated_at": now}
                for proc, pid, due in zip(procedure_ids, patient_ids, dues, strict=True)
            ],
        )  # fmt: skip
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return phones


def settings_for(url: str, base_url: str, concurrency: int) -> Settings:
    return Settings(
        database_url=url,
        sms_transport="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=FROM,
        twilio_api_base_url=base_url,
        dispatch_concurrency=concurrency,
        clinic_name="Riverside Spine Center",
        clinic_phone="(202) 555-0100",
    )


def sleep_until(instant: datetime) -> None:
    left = (instant - datetime.now(UTC)).total_seconds()
    if left > 0:
        time.sleep(left)


@dataclass
class Figures:
    rate: float  # texts per second
    p50: float  # lateness, seconds
    p99: float
    count: int


LAST_RUN: dict[str, Figures] = {}


def lateness(
    base_url: str,
    due_of: dict[str, datetime],
    elapsed: float | None,
    only: set[str] | None = None,
) -> Figures:
    got = received(base_url)
    if len(got) != len(due_of) or len({r["to"] for r in got}) != len(got):
        raise SystemExit(f"expected {len(due_of)} texts once each, the fake got {len(got)}")
    if only is not None:
        got = [r for r in got if r["to"] in only]
    late = sorted(r["received_at"] - due_of[r["to"]].timestamp() for r in got)
    rate = len(got) / elapsed if elapsed else float("nan")
    return Figures(rate, percentile(late, 50), percentile(late, 99), len(got))


def percentile(values: list[float], p: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]
        if len(values) > 1
        else values[0]
    )


# --- the runs -----------------------------------------------------------------------------


def run_ours(url: str, latency: float, concurrency: int, texts: int) -> Figures:
    """One dispatcher pass over `texts` texts due at one instant."""
    with fake_twilio(latency) as base_url:
        due = datetime.now(UTC) + timedelta(seconds=3)
        due_of = seed(url, [due] * texts)
        settings = settings_for(url, base_url, concurrency)
        transport = TwilioTransport.from_settings(settings)
        engine = make_engine(url, pool_size=2)
        factory = make_session_factory(engine)
        dispatcher = Dispatcher(
            transport=transport, care=build_care(settings), clock=SystemClock(),
            owner="bench", concurrency=concurrency,
        )  # fmt: skip
        try:
            with factory() as session:
                sleep_until(due)
                report = dispatcher.dispatch(session)
                elapsed = (datetime.now(UTC) - due).total_seconds()
        finally:
            dispatcher.close()
            transport.close()
            engine.dispose()
        if report.sent != texts:
            raise SystemExit(f"dispatcher sent {report.sent} of {texts}: {report}")
        return lateness(base_url, due_of, elapsed)


def run_bare(url: str, latency: float, concurrency: int, texts: int) -> Figures:
    """The bare official client: the same texts from a pool of `concurrency` threads."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    with fake_twilio(latency) as base_url:

        class Routed(TwilioHttpClient):  # type: ignore[misc]
            def request(self, method: str, url: str, **kwargs: Any) -> Any:
                return super().request(
                    method, url.replace("https://api.twilio.com", base_url), **kwargs
                )

        local = threading.local()

        def client() -> Any:
            if not hasattr(local, "client"):  # one client per thread: a shared one is unsafe
                local.client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=Routed(timeout=10))
            return local.client

        care = build_care(settings_for(url, base_url, concurrency))
        body = care.render_text(
            kind="kyphoplasty", step_key="no-driving", language="en",
            tz=__import__("zoneinfo").ZoneInfo(midday_zone()),
            completed_at=datetime.now(UTC), blood_thinner=None,
        )  # fmt: skip
        due = datetime.now(UTC) + timedelta(seconds=2)
        due_of = {f"+1202{i:07d}": due for i in range(texts)}

        def send(to: str) -> None:
            client().messages.create(to=to, from_=FROM, body=body)

        with ThreadPoolExecutor(concurrency) as pool:
            sleep_until(due)
            list(pool.map(send, due_of))
            elapsed = (datetime.now(UTC) - due).total_seconds()
        return lateness(base_url, due_of, elapsed)


def run_loop(
    url: str,
    latency: float,
    concurrency: int,
    dues: list[datetime],
    late_writes: int = 0,
    part: str = "all",
) -> Figures:
    """The running dispatcher loop, sleeping until texts fall due; `late_writes` more texts
    are written by another connection, each at the instant it is due."""
    from jobs.dispatcher import DispatchLoop

    with fake_twilio(latency) as base_url:
        due_of = seed(url, dues)
        settings = settings_for(url, base_url, concurrency)
        runtime = build_runtime(settings, SystemClock())
        runtime = replace(runtime, owner="bench-loop")
        loop = DispatchLoop(runtime)
        writer = make_engine(url)
        extra: dict[str, datetime] = {}
        try:
            loop.start()
            # "Another process" enrolls a patient now and then, once the loop is idle (after
            # the last due text): it has nothing to wake it but its own look at the database.
            start = (dues[-1] if dues else datetime.now(UTC)) + timedelta(seconds=1)
            for k in range(late_writes):
                sleep_until(start + timedelta(seconds=0.37 * k))
                extra.update(seed_one(writer, f"+1303{k:07d}"))
            total = len(due_of) + len(extra)
            deadline = time.monotonic() + 120
            while len(received(base_url)) < total and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            loop.stop()
            runtime.transport.close()  # type: ignore[attr-defined]
            runtime.engine.dispose()
            writer.dispose()
        if extra:
            LAST_RUN["extra"] = lateness(base_url, {**due_of, **extra}, None, only=set(extra))
        return lateness(base_url, {**due_of, **extra}, None, only=set(due_of))


def seed_one(engine: sa.Engine, phone: str) -> dict[str, datetime]:
    """One enrollment written by another connection, due the moment it is committed."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        pid = conn.scalar(sa.insert(Patient).returning(Patient.id), {
            "first_name": "Late", "last_name": "Writer", "phone": phone, "timezone": midday_zone(),
            "language": "en", "sms_consent_at": now, "created_at": now})  # fmt: skip
        proc = conn.scalar(sa.insert(Procedure).returning(Procedure.id), {
            "patient_id": pid, "kind": "kyphoplasty", "status": "completed",
            "completed_at": now, "planned_at": now, "created_at": now})  # fmt: skip
        due = datetime.now(UTC)
        conn.execute(sa.insert(Message), {
            "procedure_id": proc, "patient_id": pid, "step": "no-driving", "due_at": due,
            "expires_at": due + timedelta(hours=6), "status": "pending", "attempts": 0,
            "created_at": due, "updated_at": due})  # fmt: skip
    return {phone: due}


# --- main ---------------------------------------------------------------------------------


def median_of(runs: list[Figures]) -> Figures:
    return Figures(
        statistics.median(r.rate for r in runs),
        statistics.median(r.p50 for r in runs),
        statistics.median(r.p99 for r in runs),
        runs[0].count,
    )


def repeat(n: int, make_url: Callable[[int], str], run: Callable[[str], Figures]) -> Figures:
    return median_of([run(make_url(i)) for i in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop the PostgreSQL schema first")
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--concurrency", default="16,64", help="comma-separated, for throughput")
    parser.add_argument("--burst-concurrency", type=int, default=128)
    parser.add_argument("--latencies", default="0,0.1", help="provider latencies, seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="throughput,burst,trickle")
    args = parser.parse_args()
    only = set(args.only.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def make_url(i: int) -> str:
            return fresh_database(
                args.database_url, args.reset, folder, f"d{time.monotonic_ns()}{i}"
            )

        backend = make_engine(make_url(0)).dialect.name
        print(f"backend {backend}, {os.cpu_count()} cores; medians of {args.repeat} runs")
        if "throughput" in only:
            print(
                f"\n{args.texts:,} texts due at one instant; texts/s and lateness at the fake's receive time"
            )
            print(f"{'latency':>8} {'conc':>5} | {'ours texts/s':>12} {'p50':>7} {'p99':>7} | "
                  f"{'bare client':>11} {'p50':>7} {'p99':>7} | ours/bare")  # fmt: skip
            for latency in (float(x) for x in args.latencies.split(",")):
                for concurrency in (int(x) for x in args.concurrency.split(",")):
                    ours = repeat(
                        args.repeat,
                        make_url,
                        lambda u, la=latency, c=concurrency: run_ours(u, la, c, args.texts),
                    )
                    bare = repeat(
                        args.repeat,
                        make_url,
                        lambda u, la=latency, c=concurrency: run_bare(u, la, c, args.texts),
                    )
                    print(f"{latency * 1000:>6.0f}ms {concurrency:>5} | {ours.rate:>12,.0f} {ours.p50:>6.2f}s {ours.p99:>6.2f}s | "
                          f"{bare.rate:>11,.0f} {bare.p50:>6.2f}s {bare.p99:>6.2f}s | {ours.rate / bare.rate:.0%}", flush=True)  # fmt: skip
        if "burst" in only:
            c = args.burst_concurrency

            def burst(url: str) -> Figures:
                start = datetime.now(UTC) + timedelta(seconds=4)
                dues = [start + timedelta(seconds=i / 1000) for i in range(1000)]
                return run_loop(url, 0.1, c, dues)

            figures = repeat(args.repeat, make_url, burst)
            print(f"\nburst: 1,000 texts due within one second, 100 ms latency, the running loop, "
                  f"DISPATCH_CONCURRENCY={c}: lateness p50 {figures.p50:.2f} s, p99 {figures.p99:.2f} s")  # fmt: skip
        if "trickle" in only:

            def trickle(url: str) -> Figures:
                start = datetime.now(UTC) + timedelta(seconds=4)
                dues = [start + timedelta(seconds=0.25 * i) for i in range(40)]
                return run_loop(url, 0.1, 16, dues, late_writes=20)

            runs, extras = [], []
            for i in range(args.repeat):
                runs.append(trickle(make_url(i)))
                extras.append(LAST_RUN["extra"])
            figures, extra = median_of(runs), median_of(extras)
            print(f"trickle, 100 ms latency, DISPATCH_CONCURRENCY=16, the running loop:\n"
                  f"  40 texts due 0.25 s apart: lateness p50 {figures.p50:.3f} s, p99 {figures.p99:.3f} s\n"
                  f"  20 texts written by another connection as they fall due: "
                  f"p50 {extra.p50:.3f} s, p99 {extra.p99:.3f} s")  # fmt: skip
        random.seed(0)


if __name__ == "__main__":
    main()

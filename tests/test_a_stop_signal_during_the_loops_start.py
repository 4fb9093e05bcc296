"""A worker told to stop (SIGTERM) while the scheduler's start listener is starting the
dispatcher loop's thread stops, and does not hang.

The signal handler runs `shut_down` on the main thread wherever it is, here inside
`DispatchLoop.start()`'s `Thread.start()`: the thread object exists but has not started.
`stop()` joined it ("cannot join thread before it is started"), APScheduler swallowed the
error in its listener, and the worker never stopped (seen on CI: test_processes'
test_worker_stops_cleanly_on_a_signal killed after 20 s). The signal is simulated by
calling `stop()` from the thread's own `start()`, where the handler would land.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import jobs.dispatcher as dispatcher_module
from followup.runtime import Runtime
from jobs.dispatcher import DispatchLoop


def test_a_stop_landing_inside_the_loops_start_stops_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = DispatchLoop(runtime)
    raised: list[BaseException] = []

    class SignalledDuringStart(threading.Thread):
        def start(self) -> None:
            try:
                loop.stop()  # the SIGTERM handler, landing before the thread runs
            except BaseException as exc:  # noqa: BLE001 - what the listener would swallow
                raised.append(exc)
            super().start()

    class Threading:
        Thread = SignalledDuringStart
        Event = threading.Event
        Lock = threading.Lock

    monkeypatch.setattr(dispatcher_module, "threading", Threading)
    started: Any = None
    try:
        loop.start()
        started = loop._thread  # noqa: SLF001 - None once stopped
    finally:
        monkeypatch.undo()
    assert raised == [], f"stop() inside start() raised {raised!r}: the worker hangs"
    assert started is None, "the stopped loop still holds its thread"
    # Whatever thread start() went on to run ends at once: the loop was told to stop.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        t.name == "dispatcher" and t.is_alive() for t in threading.enumerate()
    ):
        time.sleep(0.01)
    assert not any(t.name == "dispatcher" and t.is_alive() for t in threading.enumerate())

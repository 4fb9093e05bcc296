"""The dispatcher's worker threads: each hands one text at a time to the transport."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from followup.messaging.handover import Answer, Item


@dataclass(frozen=True)
class Died:
    """A worker's call raised what no handler may catch (a dying process)."""

    exc: BaseException


class Workers:
    """`size` threads handing texts over: at most `size` calls at a time, the rest queued.

    Plain queues rather than an executor's futures: a future costs a lock and a condition
    per text, which the database thread would pay at 1,000 texts a second.
    """

    def __init__(self, size: int, call: Callable[[Item], Answer]) -> None:
        self._call = call
        self._inbox: queue.SimpleQueue[tuple[Item, queue.SimpleQueue[Answer | Died]] | None]
        self._inbox = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"dispatch-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Item, answers: queue.SimpleQueue[Answer | Died]) -> None:
        self._inbox.put((item, answers))

    def _work(self) -> None:
        while (job := self._inbox.get()) is not None:
            item, answers = job
            try:
                answers.put(self._call(item))
            except BaseException as exc:  # noqa: BLE001 - handed to the database thread
                answers.put(Died(exc))

    def shutdown(self) -> None:
        """Let the calls under way finish, then stop every thread."""
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()

"""Requests that arrive together share one trip to the database.

A Batcher owns one thread. A request hands it an item and awaits the answer;
the thread takes every item queued while it was busy with the previous batch
(at most ``max_batch``), calls ``handle(items)`` once for all of them (one
query, one transaction), and answers each request with its own outcome: a
value, or the exception to raise in that request. With one request at a time
a batch is that one item: nothing waits for company (the items of one turn of
the event loop are handed over at the end of that turn, not before).

It also replaces a thread-pool hop per request (anyio's worker threads) by a
queue put and a wake-up of the event loop, which costs less CPU.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence

Handler = Callable[[Sequence[object]], Sequence[object]]  # items -> outcome per item


class Batcher:
    def __init__(self, handle: Handler, name: str, max_batch: int = 64) -> None:
        self.handle = handle
        self.name = name
        self.max_batch = max_batch
        self.batches = 0  # handle() calls so far (the tests read it)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Items of this event-loop turn, handed over together at its end: one
        # wake-up of the thread for all the requests read in one turn, not one each.
        self._outboxes: dict[asyncio.AbstractEventLoop, list] = {}

    async def submit(self, item: object) -> object:
        """The item's outcome; raises it if it is an exception."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        outbox = self._outboxes.get(loop)
        if outbox is None:
            self._start()
            outbox = self._outboxes[loop] = []
            loop.call_soon(self._hand_over, loop)
        outbox.append((item, loop, future))
        return await future

    def close(self) -> None:
        """Handle what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self._queue.put(self._outboxes.pop(loop))

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            stop = batch is None
            while not stop and len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.extend(more)
            for start in range(0, len(batch or ()), self.max_batch):
                self._answer(batch[start : start + self.max_batch])
            if stop:
                return

    def _answer(self, waiting: list) -> None:
        try:
            outcomes = self.handle([item for item, _, _ in waiting])
        except Exception as exc:  # handle() answers per item; this is a bug, not a refusal
            outcomes = [exc] * len(waiting)
        self.batches += 1
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_, loop, future), outcome in zip(waiting, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, answers in by_loop.items():  # one wake-up of each loop per batch
            loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: list[tuple[asyncio.Future, object]]) -> None:
    for future, outcome in answers:
        if future.done():  # the client went away; what was written stays (a retry finds it)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

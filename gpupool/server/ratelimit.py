"""Failed-authentication limits with bounded memory.

A key (a client address, or a token prefix) is blocked once it has ``limit``
failures within ``window`` seconds, until the oldest of them is ``window``
old. Each key keeps at most ``limit`` timestamps, and at most ``max_keys`` keys
are kept: the least recently failed key is forgotten first. Forgetting only
ever unblocks, so memory stays bounded whatever an attacker sends.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        with self._lock:
            times = self._failures.get(key)
            if times is None or len(times) < self.limit:
                return 0.0
            wait = times[0] + self.window - self._clock()
            if wait <= 0:
                return 0.0
            return wait

    def fail(self, key: str) -> None:
        with self._lock:
            times = self._failures.pop(key, None)
            if times is None:
                times = deque(maxlen=self.limit)
            times.append(self._clock())
            self._failures[key] = times  # most recent last
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)

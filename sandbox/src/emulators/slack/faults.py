"""Slack misbehaving on purpose: rate limits and server errors, reproducibly.

Rates draw from a `random.Random(seed)`, so the same sequence of calls meets the same faults on
every run. `rate_limit_next` / `error_next` fault exactly the next N calls, for tests that want
one precise failure rather than a rate. `hold` makes calls of some methods wait until
`release`, so a test can prove that an answer did not wait for such a call (it came back while
the call could not have) without measuring any time.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

RATE_LIMITED = "ratelimited"
INTERNAL_ERROR = "internal_error"


@dataclass(kw_only=True)
class SlackFaults:
    rate_limit_rate: float = 0.0
    error_rate: float = 0.0
    seed: int = 0
    retry_after: int = 1
    rate_limit_next: int = 0
    error_next: int = 0
    methods: frozenset[str] | None = None  # None: every Web API method may fault
    # Seconds each answer of `methods` is held back AFTER Slack acted: the post is in the
    # channel, the caller does not know it yet (what a timeout leaves a client with).
    latency: float = 0.0
    _rng: random.Random | None = field(default=None, init=False, repr=False)
    _rng_seed: int | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _held: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    held_calls: int = field(default=0, init=False)

    def hold(self, *methods: str) -> None:
        """From now on, calls of `methods` wait (up to a minute) until `release()`."""
        self._released.clear()
        self._held = frozenset(methods)

    def release(self) -> None:
        self._released.set()

    def wait_if_held(self, method: str) -> None:
        if method not in self._held or self._released.is_set():
            return
        with self._lock:
            self.held_calls += 1
        self._released.wait(timeout=60)

    def delay(self, method: str) -> float:
        """How long to hold back the answer to this call of `method`."""
        if self.latency <= 0 or (self.methods is not None and method not in self.methods):
            return 0.0
        return self.latency

    def draw(self, method: str) -> str | None:
        """The fault this call of `method` meets, if any."""
        if self.methods is not None and method not in self.methods:
            return None
        with self._lock:
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return RATE_LIMITED
            if self.error_next > 0:
                self.error_next -= 1
                return INTERNAL_ERROR
            if not (self.rate_limit_rate or self.error_rate):
                return None
            if self._rng is None or self._rng_seed != self.seed:
                self._rng, self._rng_seed = random.Random(self.seed), self.seed
            roll = self._rng.random()
        if roll < self.rate_limit_rate:
            return RATE_LIMITED
        if roll < self.rate_limit_rate + self.error_rate:
            return INTERNAL_ERROR
        return None

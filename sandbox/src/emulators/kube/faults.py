"""Failure injection for requests over HTTP: errors, conflicts, latency and timeouts.

Tests flip these knobs to check that the bot retries, re-reads on conflict and survives a slow
or silent API server. Draws come from one RNG seeded by the emulator, so a given sequence of
requests meets the same faults on every run. `seed()` and the controller never see faults.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Mutable settings, read on every request; plain attribute writes are atomic enough."""

    error_rate: float = 0.0  # writes answered 500 InternalError before doing anything
    conflict_rate: float = 0.0  # updates and patches answered 409 Conflict before doing anything
    latency: float = 0.0  # seconds added to every request
    timeout_rate: float = 0.0  # requests whose answer is held back `timeout_sleep` seconds
    timeout_sleep: float = 5.0

    def reset(self) -> None:
        self.error_rate = self.conflict_rate = self.latency = self.timeout_rate = 0.0
        self.timeout_sleep = 5.0


@dataclass
class FaultDice:
    """The seeded draws; `roll(rate)` draws only when the rate is set, so that turning one
    fault on does not shift the sequence another fault sees when it is off."""

    seed: int = 0
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

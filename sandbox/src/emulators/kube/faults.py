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
    # Requests about these objects get no answer until `release()`: a path segment or the
    # body's `metadata.name` equal to a held name, or starting with `<name>-` (so holding
    # `cart` holds `cart-canary` too: every request of that service's rollout).
    held_names: frozenset[str] = frozenset()
    _released: threading.Condition = field(default_factory=threading.Condition, repr=False)
    held_now: int = 0  # requests waiting right now, for tests to wait on deterministically
    # Clients cut off from the API server: a request whose User-Agent contains one of these
    # gets its connection closed with no answer, as behind a network partition. canary-bot
    # names its replica (POD_NAME) in its User-Agent, so a test can cut off one replica.
    cut_off_agents: frozenset[str] = frozenset()
    refused: int = 0  # requests refused so far, for tests to wait on deterministically

    def reset(self) -> None:
        self.error_rate = self.conflict_rate = self.latency = self.timeout_rate = 0.0
        self.timeout_sleep = 5.0
        self.reconnect()
        self.release()

    def cut_off(self, *agents: str) -> None:
        self.cut_off_agents = self.cut_off_agents | frozenset(agents)

    def reconnect(self) -> None:
        self.cut_off_agents = frozenset()

    def refuses(self, user_agent: str) -> bool:
        """True (and counted) when this client is cut off."""
        if any(agent in user_agent for agent in self.cut_off_agents):
            self.refused += 1
            return True
        return False

    def hold(self, *names: str) -> None:
        with self._released:
            self.held_names = self.held_names | frozenset(names)

    def release(self) -> None:
        with self._released:
            self.held_names = frozenset()
            self._released.notify_all()

    def holds(self, path: str, name: str | None) -> bool:
        held = self.held_names
        if not held:
            return False
        candidates = [segment for segment in path.split("/") if segment]
        if name:
            candidates.append(name)
        return any(c == h or c.startswith(f"{h}-") for c in candidates for h in held)

    def wait_while_held(self, path: str, name: str | None, stopping: threading.Event) -> None:
        """Block this request's thread while it is held (or until the server stops)."""
        with self._released:
            if not self.holds(path, name):
                return
            self.held_now += 1
            try:
                while self.holds(path, name) and not stopping.is_set():
                    self._released.wait(0.1)
            finally:
                self.held_now -= 1


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

"""Slack's requests first: background work waits, briefly, while acknowledgements are in flight.

Every thread of the bot shares one interpreter lock. A burst of `/canary` requests is answered
in tens of milliseconds; an analysis tick, an outbox message or a chart that starts in the
middle of it takes its share of the interpreter (and of the machine) for as long as it runs,
and the burst's last answers come that much later (bench/ack.py: during a rollout, the rounds
that met a step's work were the slowest). Background work has seconds to spare, Slack's 3 s
do not wait: so a unit of background work (a tick, a Slack call, a chart) starts once no
request is in flight, or after `max_wait` at most, so that a steady stream of requests can
never hold it back for long.

A unit that runs on also steps aside for a burst at each of its Kubernetes calls (the
runtime's call hook): a step's work is several calls with its own CPU between them (building
and decoding them), and a burst arriving mid-step would otherwise share the interpreter with
all that is left of it. A thread answering a request never waits, for itself or for others.

Waiting work sleeps on a condition that the last answer of a burst wakes, rather than looking
every few milliseconds: each look took the interpreter from the requests being answered (a
forced switch of the GIL), for nothing, several times a round per waiting unit of work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ParamSpec, TypeVar

# Longer than a burst of 50 acknowledgements on 2 cores (~50 ms), short beside a 5 s beat.
MAX_WAIT_S = 0.2
P = ParamSpec("P")
T = TypeVar("T")


class Foreground:
    def __init__(
        self, *, max_wait: float = MAX_WAIT_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._quiet = threading.Condition(self._lock)
        self._in_flight = 0
        self._waiting = 0
        self._max_wait = max_wait
        self._monotonic = monotonic
        self._serving = _Serving(self)
        self._answering = threading.local()  # set on a thread while it serves a request

    def serving(self) -> AbstractContextManager[None]:
        """Around the part of a request Slack waits for (one shared object: entering it costs
        two lock turns and no generator, on the path of every acknowledgement)."""
        return self._serving

    def _enter(self) -> None:
        self._answering.now = True
        with self._lock:
            self._in_flight += 1

    def _leave(self) -> None:
        self._answering.now = False
        with self._lock:
            self._in_flight -= 1
            if not self._in_flight and self._waiting:
                self._quiet.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Units of background work waiting for the requests in flight."""
        return self._waiting

    def wait_quiet(self) -> float:
        """Return once no request is in flight, or after `max_wait`; the seconds waited.
        At once on a thread that is serving a request: it is one of those in flight."""
        if not self._in_flight or getattr(self._answering, "now", False):
            return 0.0
        started = self._monotonic()
        with self._quiet:
            if not self._in_flight:
                return 0.0
            self._waiting += 1
            try:
                self._quiet.wait_for(lambda: not self._in_flight, timeout=self._max_wait)
            finally:
                self._waiting -= 1
        return self._monotonic() - started


class _Serving(AbstractContextManager[None]):
    def __init__(self, foreground: Foreground) -> None:
        self._foreground = foreground

    def __enter__(self) -> None:
        self._foreground._enter()

    def __exit__(self, *exc: object) -> None:
        self._foreground._leave()


def after_acks(foreground: Foreground, work: Callable[P, T]) -> Callable[P, T]:
    """`work`, started once the acknowledgements in flight are answered (or `max_wait` on)."""

    def started_after_acks(*args: P.args, **kwargs: P.kwargs) -> T:
        foreground.wait_quiet()
        return work(*args, **kwargs)

    return started_after_acks

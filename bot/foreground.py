"""Slack's requests first: background work waits, briefly, while acknowledgements are in flight.

Every thread of the bot shares one interpreter lock. A burst of `/canary` requests is answered
in tens of milliseconds; an analysis tick, an outbox message or a chart that starts in the
middle of it takes its share of the interpreter (and of the machine) for as long as it runs,
and the burst's last answers come that much later (bench/ack.py: during a rollout, the rounds
that met a step's work were the slowest). Background work has seconds to spare, Slack's 3 s
do not wait: so a unit of background work (a tick, a Slack call, a chart) starts once no
request is in flight, or after `max_wait` at most, so that a steady stream of requests can
never hold it back for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

# Longer than a burst of 50 acknowledgements on 2 cores (~50 ms), short beside a 5 s beat.
MAX_WAIT_S = 0.2
POLL_S = 0.005
P = ParamSpec("P")
T = TypeVar("T")


class Foreground:
    def __init__(
        self,
        *,
        max_wait: float = MAX_WAIT_S,
        poll: float = POLL_S,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._max_wait = max_wait
        self._poll = poll
        self._monotonic = monotonic
        self._sleep = sleep

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around the part of a request Slack waits for."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def wait_quiet(self) -> float:
        """Return once no request is in flight, or after `max_wait`; the seconds waited."""
        started = self._monotonic()
        waited = 0.0
        while self._in_flight and waited < self._max_wait:
            self._sleep(self._poll)
            waited = self._monotonic() - started
        return waited


def after_acks(foreground: Foreground, work: Callable[P, T]) -> Callable[P, T]:
    """`work`, started once the acknowledgements in flight are answered (or `max_wait` on)."""

    def started_after_acks(*args: P.args, **kwargs: P.kwargs) -> T:
        foreground.wait_quiet()
        return work(*args, **kwargs)

    return started_after_acks

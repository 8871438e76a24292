"""A `MetricsProvider` that reads the synthetic traffic exporter itself: no Prometheus needed.

`canary-bot demo` must work with nothing but the package installed. When no `prometheus` binary
is found, the bot gets this provider instead of `PrometheusProvider` and keeps asking the very
same PromQL: `DirectMetrics` samples the exporter once a second, as a scrape would, keeps a few
minutes of samples, and answers each query with `emulators.promql_eval` over them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import promql_parser

from emulators.promql_eval import NAME, Labels, Points, evaluate, series_key
from emulators.traffic import TrafficExporter
from rollout.analysis import QueryFailed, Series


class DirectMetrics:
    """PromQL over the exporter's own samples; `start()` samples every `interval` seconds."""

    def __init__(
        self,
        exporter: TrafficExporter,
        *,
        interval: float = 1.0,
        retention: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exporter = exporter
        self._interval = interval
        self._retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[Labels, Points] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.queries_issued = 0

    def start(self) -> None:
        self.scrape()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="direct-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.scrape()

    def scrape(self) -> None:
        """Take one sample of every series now (what `start()` does once a second)."""
        families = self._exporter.families()
        now = self._clock()
        with self._lock:
            for family in families:
                for sample in family.samples:
                    key = series_key({**sample.labels, NAME: sample.name})
                    points = self._series.setdefault(key, deque())
                    points.append((now, float(sample.value)))
                    while points[0][0] < now - self._retention:
                        points.popleft()

    def query(self, promql: str) -> list[Series]:
        with self._lock:  # the bot runs a tick's queries side by side
            self.queries_issued += 1
        try:
            expr = promql_parser.parse(promql)
        except ValueError as error:
            raise QueryFailed(f"bad PromQL: {error}") from error
        with self._lock:  # evaluation is quick; a scrape waits for it
            return evaluate(expr, self._series, now=self._clock())

"""On-demand snapshots, rate-limited per service (`snapshot_min_interval`).

Anyone in a release channel may ask `/canary status <service>`, and each asked-for snapshot
renders a chart and uploads it to the rollout's thread. One per service per interval keeps a
busy (or mischievous) channel from turning that into a flood of uploads; within the interval
the answer points at the latest snapshot in the thread instead. The limit is kept in memory:
after a restart the first ask is served again, which is harmless.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class SnapshotLimiter:
    def __init__(self) -> None:
        self._last: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def take(self, service: str, *, now: datetime, every: timedelta) -> timedelta | None:
        """Claim the next snapshot of `service`: None when granted, else how long ago the
        latest one was granted (so the reply can say when the next one is possible)."""
        with self._lock:
            last = self._last.get(service)
            if last is not None and now - last < every:
                return now - last
            self._last[service] = now
            return None

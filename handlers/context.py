"""What every Slack listener needs, bundled so `register(app, *, services=...)` stays small."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from handlers.auth import Directory
from handlers.limits import SnapshotLimiter
from rollout.engine import Engine
from rollout.ports import Clock


@dataclass(frozen=True, kw_only=True)
class HandlerServices:
    engine: Engine
    directory: Directory
    clock: Clock
    # Runs work after Slack's acknowledgement, off the request thread: listeners answer
    # Slack when they return, so anything slow (the cluster, charts, Slack calls) goes here.
    later: Callable[[Callable[[], object]], None]
    snapshots: SnapshotLimiter = field(default_factory=SnapshotLimiter)

    def already_handled(self, key: str | None) -> bool:
        """A cheap early answer for Slack's retries; the engine re-checks under its lock."""
        return key is not None and self.engine.store.delivery_seen(key)

    def refused(self, *, user: str, action: str, why: str, rollout_id: str | None = None) -> None:
        self.engine.store.audit(
            at=self.clock.now(),
            actor=user,
            action=f"refused: {action}",
            rollout_id=rollout_id,
            detail=why,
        )

"""What every Slack listener needs, bundled so `register(app, *, services=...)` stays small."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.auth import Directory
from rollout.engine import Engine
from rollout.ports import Clock


@dataclass(frozen=True, kw_only=True)
class HandlerServices:
    engine: Engine
    directory: Directory
    clock: Clock

    def first_delivery(self, key: str) -> bool:
        """Slack may deliver a request again (retries); only the first one acts."""
        return self.engine.store.first_delivery(key, at=self.clock.now())

    def refused(self, *, user: str, action: str, why: str, rollout_id: str | None = None) -> None:
        self.engine.store.audit(
            at=self.clock.now(),
            actor=user,
            action=f"refused: {action}",
            rollout_id=rollout_id,
            detail=why,
        )

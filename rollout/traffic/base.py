"""The one interface every traffic strategy implements (see STYLE.md, after Flagger's router).

A router gets its Kubernetes clients injected and never reads config; it is told what to do
through the `Rollout` record. Every method is idempotent: the engine may call it again after a
crash or a retry, and a second call with the same arguments changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rollout.model import Rollout


@dataclass(frozen=True, kw_only=True)
class TrafficStatus:
    """What the cluster says now: the canary share in effect and whether its pods are ready."""

    weight: float
    canary_ready: bool
    detail: str


class TrafficRouter(Protocol):
    def prepare(self, rollout: Rollout) -> Rollout:
        """Create the canary objects; returns the rollout with what must be restored later."""
        ...

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        """(container name, image) of the stable workload; `rollout.container` may be empty,
        meaning the first container."""
        ...

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        """Send `weight` percent of traffic to the canary; True if anything had to change."""
        ...

    def status(self, rollout: Rollout) -> TrafficStatus: ...

    def drift(self, rollout: Rollout) -> str | None:
        """What someone changed by hand on the canary or stable workload (image, replicas),
        said for on-call; None when they are as the rollout left them."""
        ...

    def promote(self, rollout: Rollout) -> bool:
        """Move stable to the canary image; True once done and the canary objects are gone."""
        ...

    def rollback(self, rollout: Rollout) -> None:
        """All traffic to stable, canary objects removed, changed objects restored."""
        ...

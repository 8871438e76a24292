"""Drift: a hand edit of the workloads a rollout measures (DESIGN.md "Drift").

Every tick the observer asks the router whether the canary still runs the image the rollout
measures and stable still runs its original image and replica count. What it finds is a
sentence for on-call ("someone set checkout-canary's image to X; the bot measured Y"), or None;
the machine decides what to do about it (pause and page). During promotion stable legitimately
moves to the canary image, and the `replicas` strategy scales stable itself, so the expected
stable count is a range the caller gives.
"""

from __future__ import annotations

from rollout.kube import KubeGateway
from rollout.model import Phase, Rollout
from rollout.traffic.workloads import (
    RouterError,
    canary_name,
    container_image,
    our_canary,
    read_stable,
    stable_container,
)


def workload_drift(
    kube: KubeGateway, rollout: Rollout, *, stable_replicas: tuple[int, int] | None
) -> str | None:
    """What someone changed on the canary or stable Deployment, or None. `stable_replicas` is
    the (lowest, highest) count stable may have now; None: not checked."""
    canary = our_canary(kube, rollout)
    if canary is not None and rollout.container:
        image = container_image(canary, rollout.container)
        if image != rollout.canary_image:
            return (
                f"someone set {canary_name(rollout)}'s image to {image}; "
                f"the bot measured {rollout.canary_image}"
            )
    stable = read_stable(kube, rollout)
    _, image = stable_container(stable, rollout)
    allowed = {rollout.stable_image}
    if rollout.phase == Phase.PROMOTING:
        allowed.add(rollout.canary_image)
    if rollout.stable_image and image not in allowed:
        return (
            f"someone set {rollout.deployment}'s image to {image}; it ran "
            f"{rollout.stable_image} when the rollout started"
        )
    if stable_replicas is not None:
        low, high = stable_replicas
        count = int(stable.get("spec", {}).get("replicas", 1))
        if not low <= count <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            return (
                f"someone scaled {rollout.deployment} to {count} replicas; the bot expects {wanted}"
            )
    return None


def check_canary_image(kube: KubeGateway, rollout: Rollout) -> None:
    """Before promoting: refuse when the canary no longer runs the image that was measured."""
    canary = our_canary(kube, rollout)
    if canary is None or not rollout.container:
        return
    image = container_image(canary, rollout.container)
    if image != rollout.canary_image:
        raise RouterError(
            f"not promoting: {canary_name(rollout)} runs {image}, not the measured "
            f"{rollout.canary_image}"
        )

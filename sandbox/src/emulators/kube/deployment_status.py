"""The status the Deployment controller (controller.py) writes, as the real one writes it:
`observedGeneration`, the replica counts (zero counts omitted) and the `Available` and
`Progressing` conditions, including `ProgressDeadlineExceeded` and, for a paused Deployment,
Unknown/DeploymentPaused. A condition that has not changed is kept as it was, timestamps too,
so that an unchanged status is not written again.
"""

from __future__ import annotations

import math
from typing import Any

from emulators.kube.deployment_objects import is_ready
from emulators.kube.objects import timestamp

JSON = dict[str, Any]


def deployment_status(
    deployment: JSON,
    pods: list[JSON],
    *,
    current: str,
    replicas: int,
    started: float,
    now: float,
) -> tuple[JSON, float | None]:
    """The Deployment's status given its `pods`, and when its progress deadline falls if it
    is still progressing (None otherwise): the controller looks again then. `started` is when
    the current generation was first seen."""
    spec = deployment.get("spec") or {}
    updated = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == current]
    ready = sum(1 for p in pods if is_ready(p))
    counts = {
        "replicas": len(pods),
        "updatedReplicas": len(updated),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(len(pods) - ready, 0),
    }
    status: JSON = {"observedGeneration": deployment["metadata"]["generation"]}
    status.update({k: v for k, v in counts.items() if v})
    old_conditions = {
        c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []
    }
    available = ready >= replicas - _max_unavailable(spec, replicas)
    conditions = [
        _condition(
            old_conditions.get("Available"),
            "Available",
            available,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        ),
    ]
    rs_name = f"{deployment['metadata']['name']}-{current}"
    complete = len(updated) == replicas == len(pods) == ready
    deadline = started + spec.get("progressDeadlineSeconds", 600)
    state, reason, message = _progress(
        paused=bool(spec.get("paused")), complete=complete, overdue=now >= deadline
    )
    conditions.append(
        _condition(
            old_conditions.get("Progressing"),
            "Progressing",
            state,
            reason,
            message.format(rs=rs_name),
        )
    )
    status["conditions"] = conditions
    return status, (deadline if reason == "ReplicaSetUpdated" else None)


def _max_unavailable(spec: JSON, replicas: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") == "RollingUpdate" and replicas:
        rolling = strategy.get("rollingUpdate") or {}
        return _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas)
    return 0


def _progress(*, paused: bool, complete: bool, overdue: bool) -> tuple[bool | None, str, str]:
    """The Progressing condition's status, reason and message (`{rs}`: the ReplicaSet)."""
    if paused:
        return None, "DeploymentPaused", "Deployment is paused"
    if complete:
        return True, "NewReplicaSetAvailable", 'ReplicaSet "{rs}" has successfully progressed.'
    if overdue:
        return False, "ProgressDeadlineExceeded", 'ReplicaSet "{rs}" has timed out progressing.'
    return True, "ReplicaSetUpdated", 'ReplicaSet "{rs}" is progressing.'


def _int_or_percent(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(total * int(value[:-1]) / 100)
    return int(value or 0)


def _condition(old: JSON | None, kind: str, state: bool | None, reason: str, message: str) -> JSON:
    status = "Unknown" if state is None else ("True" if state else "False")
    now = timestamp()
    if old is not None and old.get("status") == status:
        if old.get("reason") == reason and old.get("message") == message:
            return old
        transition = old.get("lastTransitionTime", now)
    else:
        transition = now
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }

"""The objects the Deployment controller (controller.py) writes, built as the real one builds
them: the pod-template hash, the ReplicaSet per hash, a new Pod and the status of a Pod that has
become ready. Pure functions of the Deployment, so the controller's module holds only when to
write them.
"""

from __future__ import annotations

import json
from typing import Any

from emulators.kube.objects import clone, timestamp

JSON = dict[str, Any]
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Any) -> str:
    """A short, stable, DNS-safe hash of a pod template (FNV-1a, like the real controller)."""
    h = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[int(d)] for d in str(h))


def is_ready(pod: JSON) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _owned_by(deployment_meta: JSON) -> list[JSON]:
    """The ownerReferences of what the Deployment controls (its ReplicaSets and Pods)."""
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment_meta["name"],
            "uid": deployment_meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def replica_set(deployment: JSON, current: str, replicas: int) -> JSON:
    """The ReplicaSet `<deployment>-<hash>`: template and selector carry `pod-template-hash`."""
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    template = clone(spec.get("template") or {})
    template_meta = template.setdefault("metadata", {})
    labels = {**(template_meta.get("labels") or {}), "pod-template-hash": current}
    template_meta["labels"] = labels
    match = {
        **((spec.get("selector") or {}).get("matchLabels") or {}),
        "pod-template-hash": current,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{current}",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": _owned_by(meta),
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": match}, "template": template},
    }


def with_replicas(rs: JSON, replicas: int) -> JSON:
    new: JSON = clone(rs)
    new["spec"]["replicas"] = replicas
    return new


def new_pod(deployment: JSON, current: str, name: str) -> JSON:
    """A Pending Pod `name` from the Deployment's template, owned by the Deployment itself."""
    meta = deployment["metadata"]
    template = deployment["spec"].get("template") or {}
    template_meta = template.get("metadata") or {}
    pod_meta: JSON = {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {**(template_meta.get("labels") or {}), "pod-template-hash": current},
        "ownerReferences": _owned_by(meta),
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = clone(template_meta["annotations"])
    spec = clone(template.get("spec") or {})
    spec["nodeName"] = "emulator-node"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": spec,
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "lastTransitionTime": timestamp(),
                }
            ],
        },
    }


def ready_status(pod: JSON, *, ip: str) -> JSON:
    """The status of `pod` once running and ready at `ip`, every container started."""
    started = timestamp()
    return {
        "phase": "Running",
        "hostIP": "10.0.0.1",
        "podIP": ip,
        "startTime": started,
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": started}
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "containerStatuses": [
            {
                "name": c.get("name"),
                "image": c.get("image"),
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
            for c in (pod.get("spec") or {}).get("containers") or []
        ],
    }

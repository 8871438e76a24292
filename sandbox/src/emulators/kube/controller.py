"""A Deployment controller, so that what the bot waits for (ready pods, status) happens.

It keeps, for every Deployment, `spec.replicas` Pods built from the pod template (named
`<deployment>-<template-hash>-<n>`, labelled with the template labels plus `pod-template-hash`,
owned by the Deployment itself). Beside them it keeps one ReplicaSet per template hash, as the
real controller does (`<deployment>-<template-hash>`, owned by the Deployment, its template and
selector carrying `pod-template-hash`, `spec.replicas` the pods of that hash), so a client can
find the current ReplicaSet's hash the way kubectl does; the Pods are not linked to it. New
Pods become Ready
`ready_delay` seconds after they are created, unless the Deployment is held with `hold`; old
Pods (another template hash) are removed once all new ones are ready, as at the end of a
rolling update. It then writes the status the real controller writes (zero counts omitted,
as the real one does): `observedGeneration`, the replica counts and the `Available` and
`Progressing` conditions, including `ProgressDeadlineExceeded`. A paused Deployment's pods are
left alone and its Progressing condition is Unknown/DeploymentPaused.

It is event-driven so that thousands of Deployments cost nothing at rest: the store tells it
which Deployments changed (a new generation, a deleted Pod, a status written by someone
else), and a timer heap wakes it when a Pod is due to become ready or a deadline expires.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulators.kube.objects import ObjectStore, clone, timestamp
from emulators.kube.resources import ResourceKind

log = logging.getLogger(__name__)
JSON = dict[str, Any]
Key = tuple[str, str]
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Any) -> str:
    """A short, stable, DNS-safe hash of a pod template (FNV-1a, like the real controller)."""
    h = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[int(d)] for d in str(h))


def _replica_set(deployment: JSON, current: str, replicas: int) -> JSON:
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
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": match}, "template": template},
    }


def _with_replicas(rs: JSON, replicas: int) -> JSON:
    new: JSON = clone(rs)
    new["spec"]["replicas"] = replicas
    return new


def is_ready(pod: JSON) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _int_or_percent(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(total * int(value[:-1]) / 100)
    return int(value or 0)


@dataclass
class _Track:
    generation: int = 0
    started: float = 0.0  # when the current generation was first seen (progress deadline)
    counter: int = 0


class DeploymentController:
    def __init__(
        self,
        store: ObjectStore,
        *,
        ready_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ready_delay = ready_delay
        self.clock = clock
        found_d = store.registry.by_kind("apps/v1", "Deployment")
        found_p = store.registry.by_kind("v1", "Pod")
        found_rs = store.registry.by_kind("apps/v1", "ReplicaSet")
        assert found_d is not None and found_p is not None and found_rs is not None
        self._deployments, self._pods = found_d[0], found_p[0]
        self._replica_sets = found_rs[0]
        self._cond = threading.Condition()
        self._dirty: set[Key] = set()
        self._timers: list[tuple[float, Key]] = []
        self._held: set[Key] = set()
        self._tracks: dict[Key, _Track] = {}
        self._ready_at: dict[Key, float] = {}  # pod (namespace, name) -> when it becomes ready
        self._writing = False
        self._stopping = False
        self._ips = 0
        self._thread: threading.Thread | None = None
        store.listeners.append(self._on_change)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="kube-deployments", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def hold(self, namespace: str, name: str, held: bool) -> None:
        with self._cond:
            (self._held.add if held else self._held.discard)((namespace, name))
            self._mark((namespace, name))

    def _mark(self, key: Key) -> None:
        self._dirty.add(key)
        self._cond.notify_all()

    def _on_change(self, rk: ResourceKind, old: JSON | None, new: JSON | None) -> None:
        """Store listener (the store lock is held): only takes note of what to reconcile."""
        if self._writing:
            return
        obj = new if new is not None else old
        assert obj is not None
        meta = obj["metadata"]
        if rk is self._deployments:
            with self._cond:
                self._mark((meta["namespace"], meta["name"]))
        elif rk is self._pods and new is None:
            self._ready_at.pop((meta["namespace"], meta["name"]), None)
            for ref in meta.get("ownerReferences") or []:
                if ref.get("kind") == "Deployment":
                    with self._cond:
                        self._mark((meta["namespace"], ref["name"]))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = self.clock()
                    while self._timers and self._timers[0][0] <= now:
                        self._dirty.add(heapq.heappop(self._timers)[1])
                    if self._dirty:
                        break
                    wait = self._timers[0][0] - now if self._timers else None
                    self._cond.wait(timeout=wait)
                if self._stopping:
                    return
                keys, self._dirty = sorted(self._dirty), set()
                held = set(self._held)
            for key in keys:
                with self.store.lock:
                    try:
                        self._reconcile(key, held=key in held)
                    except Exception:  # an object only validate=False lets in; keep going
                        log.exception("kube emulator: cannot reconcile Deployment %s/%s", *key)

    def _at(self, when: float, key: Key) -> None:
        with self._cond:
            heapq.heappush(self._timers, (when, key))

    # --- reconciling ------------------------------------------------------------------------

    def _reconcile(self, key: Key, *, held: bool) -> None:
        deployment = self.store.get(self._deployments, *key)
        if deployment is None:
            self._tracks.pop(key, None)
            return
        now = self.clock()
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        track = self._tracks.setdefault(key, _Track())
        if track.generation != meta["generation"]:
            track.generation, track.started = meta["generation"], now
        replicas = spec.get("replicas", 1)
        current = template_hash(spec.get("template"))
        self._writing = True
        try:
            if not spec.get("paused"):
                self._sync_pods(deployment, track, current, replicas, now=now, held=held)
            self._sync_replica_sets(deployment, current)
            self._write_status(deployment, track, current, replicas, now=now)
        finally:
            self._writing = False

    def _owned_pods(self, deployment: JSON) -> list[JSON]:
        pods = self.store.dependents(deployment["metadata"]["uid"])
        return sorted((p for p in pods if p["kind"] == "Pod"), key=lambda p: p["metadata"]["name"])

    def _sync_pods(
        self,
        deployment: JSON,
        track: _Track,
        current: str,
        replicas: int,
        *,
        now: float,
        held: bool,
    ) -> None:
        key = (deployment["metadata"]["namespace"], deployment["metadata"]["name"])
        pods = self._owned_pods(deployment)
        new = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == current]
        old = [p for p in pods if p not in new]
        while len(new) < replicas:
            new.append(self._create_pod(deployment, track, current, now=now))
        # Scale down the least useful first: not ready, then the newest.
        for pod in sorted(new, key=lambda p: (is_ready(p), p["metadata"]["name"]))[
            : max(len(new) - replicas, 0)
        ]:
            self._delete_pod(pod)
            new.remove(pod)
        for i, pod in enumerate(new):
            if is_ready(pod):
                continue
            pod_key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            ready_at = self._ready_at.setdefault(pod_key, now + self.ready_delay)
            if held:
                continue
            if ready_at <= now:
                new[i] = self._make_ready(pod)
            else:
                self._at(ready_at, key)
        if all(is_ready(p) for p in new):
            for pod in old:
                self._delete_pod(pod)

    def _sync_replica_sets(self, deployment: JSON, current: str) -> None:
        """One ReplicaSet per template hash seen, sized to its pods; written only on change."""
        meta = deployment["metadata"]
        counts: dict[str, int] = {current: 0}
        for pod in self._owned_pods(deployment):
            pod_hash = pod["metadata"]["labels"].get("pod-template-hash", "")
            counts[pod_hash] = counts.get(pod_hash, 0) + 1
        if not (deployment.get("spec") or {}).get("paused"):
            counts[current] = (deployment.get("spec") or {}).get("replicas", 1)
        existing = {
            rs["metadata"]["labels"].get("pod-template-hash"): rs
            for rs in self.store.dependents(meta["uid"])
            if rs["kind"] == "ReplicaSet"
        }
        for rs_hash, rs in existing.items():
            if rs_hash not in counts and rs["spec"].get("replicas") != 0:
                self.store.update(self._replica_sets, rs, _with_replicas(rs, 0))
        for rs_hash, count in counts.items():
            found = existing.get(rs_hash)
            if found is None and rs_hash == current:
                self.store.create(self._replica_sets, _replica_set(deployment, current, count))
            elif found is not None and found["spec"].get("replicas") != count:
                self.store.update(self._replica_sets, found, _with_replicas(found, count))

    def _create_pod(self, deployment: JSON, track: _Track, current: str, *, now: float) -> JSON:
        meta = deployment["metadata"]
        template = deployment["spec"].get("template") or {}
        template_meta = template.get("metadata") or {}
        track.counter += 1
        name = f"{meta['name']}-{current}-{track.counter}"
        pod_meta: JSON = {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**(template_meta.get("labels") or {}), "pod-template-hash": current},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = clone(template_meta["annotations"])
        spec = clone(template.get("spec") or {})
        spec["nodeName"] = "emulator-node"
        pod = {
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
        self._ready_at[(meta["namespace"], name)] = now + self.ready_delay
        return self.store.create(self._pods, pod)

    def _make_ready(self, pod: JSON) -> JSON:
        new = clone(pod)
        started = timestamp()
        new["status"] = {
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": self._next_ip(),
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
        self._ready_at.pop((pod["metadata"]["namespace"], pod["metadata"]["name"]), None)
        return self.store.update(self._pods, pod, new)

    def _next_ip(self) -> str:
        self._ips += 1
        return f"10.244.{self._ips // 250 % 250}.{self._ips % 250 + 1}"

    def _delete_pod(self, pod: JSON) -> None:
        self._ready_at.pop((pod["metadata"]["namespace"], pod["metadata"]["name"]), None)
        self.store.delete(self._pods, pod)

    # --- status -----------------------------------------------------------------------------

    def _write_status(
        self, deployment: JSON, track: _Track, current: str, replicas: int, *, now: float
    ) -> None:
        spec = deployment.get("spec") or {}
        pods = self._owned_pods(deployment)
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
        rs_name = f"{deployment['metadata']['name']}-{current}"
        complete = len(updated) == replicas == len(pods) == ready
        strategy = spec.get("strategy") or {}
        max_unavailable = 0
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and replicas:
            rolling = strategy.get("rollingUpdate") or {}
            max_unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas)
        old_conditions = {
            c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []
        }
        available = ready >= replicas - max_unavailable
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
        deadline = track.started + spec.get("progressDeadlineSeconds", 600)
        if spec.get("paused"):
            progressing = _condition(
                old_conditions.get("Progressing"),
                "Progressing",
                None,
                "DeploymentPaused",
                "Deployment is paused",
            )
        elif complete:
            progressing = _condition(
                old_conditions.get("Progressing"),
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif now >= deadline:
            progressing = _condition(
                old_conditions.get("Progressing"),
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            progressing = _condition(
                old_conditions.get("Progressing"),
                "Progressing",
                True,
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
            )
            key = (deployment["metadata"]["namespace"], deployment["metadata"]["name"])
            self._at(deadline, key)
        conditions.append(progressing)
        status["conditions"] = conditions
        if status != deployment.get("status"):
            new = clone(deployment)
            new["status"] = status
            self.store.update(self._deployments, deployment, new)


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

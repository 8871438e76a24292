"""A Deployment controller, so that what the bot waits for (ready pods, status) happens.

It keeps, for every Deployment, `spec.replicas` Pods built from the pod template (named
`<deployment>-<template-hash>-<n>`, labelled with the template labels plus `pod-template-hash`,
owned by the Deployment itself). Beside them it keeps one ReplicaSet per template hash, as the
real controller does (`<deployment>-<template-hash>`, owned by the Deployment, its template and
selector carrying `pod-template-hash`, `spec.replicas` the pods of that hash), so a client can
find the current ReplicaSet's hash the way kubectl does; the Pods are not linked to it. New
Pods become Ready `ready_delay` seconds after they are created, unless the Deployment is held
with `hold`; old Pods (another template hash) are removed once all new ones are ready, as at
the end of a rolling update. It then writes the status the real controller writes
(deployment_status.py). A paused Deployment's pods are left alone. The objects themselves are
built in deployment_objects.py; this module decides when to write them.

It is event-driven so that thousands of Deployments cost nothing at rest: the store tells it
which Deployments changed (a new generation, a deleted Pod, a status written by someone
else), and a timer heap wakes it when a Pod is due to become ready or a deadline expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from emulators.kube.deployment_objects import (
    is_ready,
    new_pod,
    ready_status,
    replica_set,
    template_hash,
    with_replicas,
)
from emulators.kube.deployment_status import deployment_status
from emulators.kube.objects import ObjectStore, clone
from emulators.kube.reconcile_loop import JSON, Key, ReconcileLoop
from emulators.kube.resources import ResourceKind

__all__ = ["DeploymentController", "is_ready", "template_hash"]


@dataclass
class _Track:
    generation: int = 0
    started: float = 0.0  # when the current generation was first seen (progress deadline)
    counter: int = 0


class DeploymentController(ReconcileLoop):
    def __init__(
        self,
        store: ObjectStore,
        *,
        ready_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, clock=clock, name="kube-deployments", kind_name="Deployment")
        self.ready_delay = ready_delay
        found_d = store.registry.by_kind("apps/v1", "Deployment")
        found_p = store.registry.by_kind("v1", "Pod")
        found_rs = store.registry.by_kind("apps/v1", "ReplicaSet")
        assert found_d is not None and found_p is not None and found_rs is not None
        self._deployments, self._pods = found_d[0], found_p[0]
        self._replica_sets = found_rs[0]
        self._held: set[Key] = set()
        self._held_now: set[Key] = set()  # `_held` as the batch being reconciled was taken
        self._tracks: dict[Key, _Track] = {}
        self._ready_at: dict[Key, float] = {}  # pod (namespace, name) -> when it becomes ready
        self._ips = 0
        store.listeners.append(self._on_change)

    def hold(self, namespace: str, name: str, held: bool) -> None:
        with self._cond:
            (self._held.add if held else self._held.discard)((namespace, name))
            self._mark((namespace, name))

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

    def _taking(self) -> None:
        self._held_now = set(self._held)

    # --- reconciling ------------------------------------------------------------------------

    def _reconcile(self, key: Key) -> None:
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
        if not spec.get("paused"):
            held = key in self._held_now
            self._sync_pods(deployment, track, current, replicas, now=now, held=held)
        self._sync_replica_sets(deployment, current)
        self._write_status(deployment, track, current, replicas, now=now)

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
                self.store.update(self._replica_sets, rs, with_replicas(rs, 0))
        for rs_hash, count in counts.items():
            found = existing.get(rs_hash)
            if found is None and rs_hash == current:
                self.store.create(self._replica_sets, replica_set(deployment, current, count))
            elif found is not None and found["spec"].get("replicas") != count:
                self.store.update(self._replica_sets, found, with_replicas(found, count))

    def _create_pod(self, deployment: JSON, track: _Track, current: str, *, now: float) -> JSON:
        meta = deployment["metadata"]
        track.counter += 1
        name = f"{meta['name']}-{current}-{track.counter}"
        pod = new_pod(deployment, current, name)
        self._ready_at[(meta["namespace"], name)] = now + self.ready_delay
        return self.store.create(self._pods, pod)

    def _make_ready(self, pod: JSON) -> JSON:
        new = clone(pod)
        new["status"] = ready_status(pod, ip=self._next_ip())
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
        status, deadline = deployment_status(
            deployment,
            self._owned_pods(deployment),
            current=current,
            replicas=replicas,
            started=track.started,
            now=now,
        )
        if deadline is not None:  # still progressing: look again when the deadline falls
            meta = deployment["metadata"]
            self._at(deadline, (meta["namespace"], meta["name"]))
        if status != deployment.get("status"):
            new = clone(deployment)
            new["status"] = status
            self.store.update(self._deployments, deployment, new)

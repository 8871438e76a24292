"""The object store: every object, and the metadata only the server may set.

It plays etcd plus the generic registry: one global `resourceVersion` counter (a string to
clients), `uid`, `creationTimestamp`, `generation` (1 at creation, +1 whenever anything outside
`metadata` and `status` changes), namespaces created on first use, and garbage collection of
dependents through `ownerReferences` (an index by owner uid keeps it cheap with thousands of
objects). One re-entrant lock guards everything; listeners (the Deployment controller) are told
of each change while it is held, so they must only take note and return.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from emulators.kube import errors
from emulators.kube.resources import Registry, ResourceKind

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
KindKey = tuple[str, str]  # (group, kind)
Listener = Callable[[ResourceKind, JSON | None, JSON | None], None]


def clone(value: Any) -> Any:
    """A deep copy of JSON data, several times faster than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def timestamp(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))


def spec_part(obj: JSON) -> JSON:
    """What `generation` tracks: everything but metadata, status, kind and apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class ObjectStore:
    def __init__(self, registry: Registry, *, seed: int = 0) -> None:
        self.registry = registry
        self.lock = threading.RLock()
        self._rv = 0
        self._uids = random.Random(seed)
        self._objects: dict[KindKey, dict[Key, JSON]] = {
            (rk.group, rk.kind): {} for rk in registry.kinds
        }
        self._kinds = {(rk.group, rk.kind): rk for rk in registry.kinds}
        self._dependents: dict[str, set[tuple[KindKey, Key]]] = {}
        self.listeners: list[Listener] = []
        namespace = registry.by_kind("v1", "Namespace")
        assert namespace is not None
        self._namespace_kind = namespace[0]

    # --- reading (callers hold the lock and copy what they hand out) -------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, rk: ResourceKind, namespace: str | None, name: str) -> JSON | None:
        return self._objects[(rk.group, rk.kind)].get((namespace or "", name))

    def iter(self, rk: ResourceKind, namespace: str | None = None) -> Iterator[JSON]:
        """Objects of a kind, in etcd key order (namespace, then name)."""
        bucket = self._objects[(rk.group, rk.kind)]
        for key in sorted(bucket):
            if namespace is None or key[0] == namespace:
                yield bucket[key]

    def dependents(self, uid: str) -> list[JSON]:
        found = []
        for kind_key, key in self._dependents.get(uid, ()):
            obj = self._objects[kind_key].get(key)
            if obj is not None:
                found.append(obj)
        return found

    # --- writing ----------------------------------------------------------------------------

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def new_uid(self) -> str:
        return str(uuid.UUID(int=self._uids.getrandbits(128), version=4))

    def random_suffix(self, length: int = 5) -> str:
        return "".join(self._uids.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(length))

    def create(self, rk: ResourceKind, obj: JSON) -> JSON:
        """Stores a new object (already validated), filling server-owned metadata."""
        meta = obj["metadata"]
        namespace = meta.get("namespace", "") if rk.namespaced else ""
        key = (namespace, meta["name"])
        bucket = self._objects[(rk.group, rk.kind)]
        if key in bucket:
            raise errors.already_exists(plural=rk.plural, group=rk.group, name=meta["name"])
        if rk.namespaced:
            self.ensure_namespace(namespace)
        else:
            meta.pop("namespace", None)
        meta["uid"] = self.new_uid()
        meta["creationTimestamp"] = timestamp()
        meta["generation"] = 1
        meta["resourceVersion"] = self._bump()
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(field, None)
        bucket[key] = obj
        self._index(rk, key, obj)
        self._notify(rk, None, obj)
        return obj

    def update(self, rk: ResourceKind, old: JSON, new: JSON) -> JSON:
        """Replaces `old` with `new` (already validated), keeping server-owned metadata."""
        meta, old_meta = new["metadata"], old["metadata"]
        for field in ("uid", "creationTimestamp", "name", "namespace"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        generation = old_meta.get("generation", 1)
        meta["generation"] = generation + 1 if spec_part(new) != spec_part(old) else generation
        meta["resourceVersion"] = self._bump()
        key = (old_meta.get("namespace", ""), old_meta["name"])
        self._unindex(rk, key, old)
        self._objects[(rk.group, rk.kind)][key] = new
        self._index(rk, key, new)
        self._notify(rk, old, new)
        return new

    def delete(self, rk: ResourceKind, obj: JSON, *, cascade: bool = True) -> JSON:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects[(rk.group, rk.kind)]
        if bucket.get(key) is not obj:
            return obj
        del bucket[key]
        self._unindex(rk, key, obj)
        self._bump()
        if cascade:
            for dependent in self.dependents(meta["uid"]):
                dep_kind = self.registry.by_kind(dependent["apiVersion"], dependent["kind"])
                if dep_kind is not None:
                    self.delete(dep_kind[0], dependent)
            if rk is self._namespace_kind:
                self._delete_namespace_contents(meta["name"])
        self._notify(rk, obj, None)
        return obj

    def _delete_namespace_contents(self, namespace: str) -> None:
        for kind_key, bucket in self._objects.items():
            rk = self._kinds[kind_key]
            if rk.namespaced:
                for key in [k for k in bucket if k[0] == namespace]:
                    if key in bucket:
                        self.delete(rk, bucket[key])

    def ensure_namespace(self, name: str) -> None:
        if (("", name)) not in self._objects[("", "Namespace")]:
            self.create(
                self._namespace_kind,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )

    # --- bookkeeping ------------------------------------------------------------------------

    def _index(self, rk: ResourceKind, key: Key, obj: JSON) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            self._dependents.setdefault(ref["uid"], set()).add(((rk.group, rk.kind), key))

    def _unindex(self, rk: ResourceKind, key: Key, obj: JSON) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            entries = self._dependents.get(ref["uid"])
            if entries is not None:
                entries.discard(((rk.group, rk.kind), key))
                if not entries:
                    del self._dependents[ref["uid"]]

    def _notify(self, rk: ResourceKind, old: JSON | None, new: JSON | None) -> None:
        for listener in self.listeners:
            listener(rk, old, new)

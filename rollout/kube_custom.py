"""The gateway's calls on custom resources (Istio, Gateway API, Argo Rollouts).

Custom resources accept JSON merge patches (never strategic merge); replace (PUT) is used where
a whole field must come back exactly, with `resourceVersion` in the body as the precondition
that keeps a concurrent writer's change from being overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollout.kube_base import JSON, PAGE_SIZE, GatewayBase, json_of, only_if
from rollout.kube_call import KubeConflict, Timeouts
from rollout.kube_reads import Collection


@dataclass(frozen=True)
class CustomKind:
    """Where a custom resource lives in the API: `/apis/{group}/{version}/.../{plural}`."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def collection(self, namespace: str) -> Collection:
        return Collection(f"{self.plural}.{self.group}", namespace)


class CustomObjectCalls(GatewayBase):
    def read_custom(self, kind: CustomKind, namespace: str, name: str) -> JSON | None:
        return self._observed(
            kind.collection(namespace),
            name,
            what=f"{kind.kind} {namespace}/{name}",
            get=lambda timeout: self._get_custom(kind, namespace, name, timeout),
            list_page=lambda timeout, token: self._custom.list_namespaced_custom_object(
                *_where(kind, namespace),
                limit=PAGE_SIZE,
                _continue=token,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    def _read_custom_by_name(self, kind: CustomKind, namespace: str, name: str) -> JSON | None:
        return self._read_or_none(
            f"{kind.kind} {namespace}/{name}",
            lambda timeout: self._get_custom(kind, namespace, name, timeout),
        )

    def _get_custom(self, kind: CustomKind, namespace: str, name: str, timeout: Timeouts) -> Any:
        return self._custom.get_namespaced_custom_object(
            *_where(kind, namespace), name, _preload_content=False, _request_timeout=timeout
        )

    def create_custom(self, kind: CustomKind, namespace: str, body: JSON) -> None:
        self._writing(kind.collection(namespace), body["metadata"]["name"])
        self._create_unless_exists(
            f"{kind.kind} {namespace}/{body['metadata']['name']}",
            lambda timeout: self._custom.create_namespaced_custom_object(
                *_where(kind, namespace),
                body,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    def replace_custom(self, kind: CustomKind, namespace: str, body: JSON) -> JSON:
        """PUT the whole object; `body.metadata.resourceVersion` must be the one read."""
        name = body["metadata"]["name"]
        self._writing(kind.collection(namespace), name)
        response = self._call(
            "replace",
            f"{kind.kind} {namespace}/{name}",
            lambda timeout: self._custom.replace_namespaced_custom_object(
                *_where(kind, namespace),
                name,
                body,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )
        return json_of(response)

    def patch_custom(
        self,
        kind: CustomKind,
        namespace: str,
        name: str,
        patch: JSON,
        *,
        status: bool = False,
    ) -> JSON:
        """JSON merge patch of the object, or of its `status` subresource; a
        `metadata.resourceVersion` inside the patch makes it conditional."""
        method = (
            self._custom.patch_namespaced_custom_object_status
            if status
            else self._custom.patch_namespaced_custom_object
        )
        self._writing(kind.collection(namespace), name)
        response = self._call(
            "patch",
            f"{kind.kind} {namespace}/{name}" + (" status" if status else ""),
            lambda timeout: method(
                *_where(kind, namespace),
                name,
                patch,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )
        return json_of(response)

    def update_custom(
        self,
        kind: CustomKind,
        namespace: str,
        name: str,
        change: Callable[[JSON], JSON | None],
        *,
        attempts: int = 4,
    ) -> bool:
        """Read-modify-write: `change(current)` returns the object to write, or None to leave
        it. The write carries the `resourceVersion` read, so a concurrent change is never
        overwritten: a conflict starts again from a fresh read by name (never from a beat's
        LIST). True if written; False also when the object does not exist."""
        for attempt in range(attempts):
            current = (
                self.read_custom(kind, namespace, name)
                if attempt == 0
                else self._read_custom_by_name(kind, namespace, name)
            )
            wanted = None if current is None else change(current)
            if wanted is None:
                return False
            try:
                self.replace_custom(kind, namespace, wanted)
                return True
            except KubeConflict:
                if attempt == attempts - 1:
                    raise
        return False

    def set_custom_spec(
        self,
        kind: CustomKind,
        namespace: str,
        name: str,
        spec: JSON,
        *,
        unless: JSON | None = None,
    ) -> bool:
        """Makes the object's `spec` exactly `spec`, unless it already is or it is `unless`;
        True if written (False also when the object does not exist)."""

        def change(current: JSON) -> JSON | None:
            found = current.get("spec")
            if found == spec or (unless is not None and found == unless):
                return None
            return {**current, "spec": spec}

        return self.update_custom(kind, namespace, name, change)

    def delete_custom(
        self, kind: CustomKind, namespace: str, name: str, *, uid: str | None = None
    ) -> None:
        self._writing(kind.collection(namespace), name)
        self._delete_unless_gone(
            f"{kind.kind} {namespace}/{name}",
            lambda timeout: self._custom.delete_namespaced_custom_object(
                *_where(kind, namespace),
                name,
                body=only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )


def _where(kind: CustomKind, namespace: str) -> tuple[str, str, str, str]:
    """The leading arguments of every namespaced `CustomObjectsApi` call."""
    return kind.group, kind.version, namespace, kind.plural

"""The bot's one door to the Kubernetes API: the official client, plain dicts, bounded retries.

Routers get a `KubeGateway` injected; they never load a kubeconfig or build clients. Responses
are read as the server's JSON (camelCase dicts) rather than the client's model objects, so a
router can copy an object faithfully. Every write is idempotent by construction (absolute
values, AlreadyExists on create and NotFound on delete are success), which is what makes
retrying with backoff and jitter (tenacity) safe.

Every call has ONE deadline (`kubernetes.request_timeout`, retries included): see
`rollout/kube_call.py`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from rollout.kube_call import (
    DEFAULT_REQUEST_TIMEOUT,
    BoundedCall,
    KubeConflict,
    KubeDeadlineExceeded,
    KubeUnavailable,
    Timeouts,
)

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "canary-bot"}
__all__ = [
    "MANAGED_BY",
    "CustomKind",
    "KubeConflict",
    "KubeDeadlineExceeded",
    "KubeGateway",
    "KubeUnavailable",
]


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


def _only_if(uid: str | None) -> k8s.V1DeleteOptions | None:
    """Delete options that make the API server refuse unless the object still has `uid`."""
    if uid is None:
        return None
    return k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid))


class KubeGateway:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        on_call: Callable[[str, str], None] | None = None,
        on_deadline: Callable[[str], None] | None = None,
    ) -> None:
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._networking = k8s.NetworkingV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._call = BoundedCall(
            request_timeout=request_timeout, on_call=on_call, on_deadline=on_deadline
        )

    # ----------------------------------------------------------------- deployments

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self._call(
                "get",
                f"deployment {namespace}/{name}",
                lambda timeout: self._apps.read_namespaced_deployment(
                    name, namespace, _preload_content=False, _request_timeout=timeout
                ),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    def create_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        try:
            self._call(
                "create",
                f"deployment {namespace}/{name}",
                lambda timeout: self._apps.create_namespaced_deployment(
                    namespace, body, _preload_content=False, _request_timeout=timeout
                ),
            )
        except ApiException as error:
            if error.status != 409 or "AlreadyExists" not in str(error.body):
                raise

    def list_replica_sets(
        self, namespace: str, *, selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The ReplicaSets whose labels match `selector` (a Deployment's `matchLabels`)."""
        label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        response = self._call(
            "list",
            f"replicasets {namespace} ({label_selector})",
            lambda timeout: self._apps.list_namespaced_replica_set(
                namespace,
                label_selector=label_selector,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )
        items = _json(response).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Strategic-merge patch (the client picks it for a dict body on Deployments)."""
        self._call(
            "patch",
            f"deployment {namespace}/{name}",
            lambda timeout: self._apps.patch_namespaced_deployment(
                name, namespace, patch, _preload_content=False, _request_timeout=timeout
            ),
        )

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self._call(
            "scale",
            f"deployment {namespace}/{name} to {replicas}",
            lambda timeout: self._apps.patch_namespaced_deployment_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    def delete_deployment(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        self._delete_unless_gone(
            f"deployment {namespace}/{name}",
            lambda timeout: self._apps.delete_namespaced_deployment(
                name,
                namespace,
                body=_only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    # ----------------------------------------------------------------- custom objects
    # Custom resources accept JSON merge patches (never strategic merge); replace (PUT) is
    # used where a whole field must come back exactly, with `resourceVersion` in the body
    # as the precondition that keeps a concurrent writer's change from being overwritten.

    def read_custom(self, kind: CustomKind, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(
            f"{kind.kind} {namespace}/{name}",
            lambda timeout: self._custom.get_namespaced_custom_object(
                *_where(kind, namespace),
                name,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    def create_custom(self, kind: CustomKind, namespace: str, body: dict[str, Any]) -> None:
        self._create_unless_exists(
            f"{kind.kind} {namespace}/{body['metadata']['name']}",
            lambda timeout: self._custom.create_namespaced_custom_object(
                *_where(kind, namespace),
                body,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    def replace_custom(
        self, kind: CustomKind, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT the whole object; `body.metadata.resourceVersion` must be the one read."""
        name = body["metadata"]["name"]
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
        return _json(response)

    def patch_custom(
        self,
        kind: CustomKind,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        """JSON merge patch of the object, or of its `status` subresource; a
        `metadata.resourceVersion` inside the patch makes it conditional."""
        method = (
            self._custom.patch_namespaced_custom_object_status
            if status
            else self._custom.patch_namespaced_custom_object
        )
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
        return _json(response)

    def update_custom(
        self,
        kind: CustomKind,
        namespace: str,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        attempts: int = 4,
    ) -> bool:
        """Read-modify-write: `change(current)` returns the object to write, or None to leave
        it. The write carries the `resourceVersion` read, so a concurrent change is never
        overwritten: a conflict starts again from a fresh read. True if written; False also
        when the object does not exist."""
        for attempt in range(attempts):
            current = self.read_custom(kind, namespace, name)
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
        spec: dict[str, Any],
        *,
        unless: dict[str, Any] | None = None,
    ) -> bool:
        """Makes the object's `spec` exactly `spec`, unless it already is or it is `unless`;
        True if written (False also when the object does not exist)."""

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            found = current.get("spec")
            if found == spec or (unless is not None and found == unless):
                return None
            return {**current, "spec": spec}

        return self.update_custom(kind, namespace, name, change)

    def delete_custom(
        self, kind: CustomKind, namespace: str, name: str, *, uid: str | None = None
    ) -> None:
        self._delete_unless_gone(
            f"{kind.kind} {namespace}/{name}",
            lambda timeout: self._custom.delete_namespaced_custom_object(
                *_where(kind, namespace),
                name,
                body=_only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    # ----------------------------------------------------------------- services

    def read_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(
            f"service {namespace}/{name}",
            lambda timeout: self._core.read_namespaced_service(
                name, namespace, _preload_content=False, _request_timeout=timeout
            ),
        )

    def create_service(self, namespace: str, body: dict[str, Any]) -> None:
        self._create_unless_exists(
            f"service {namespace}/{body['metadata']['name']}",
            lambda timeout: self._core.create_namespaced_service(
                namespace, body, _preload_content=False, _request_timeout=timeout
            ),
        )

    def delete_service(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        self._delete_unless_gone(
            f"service {namespace}/{name}",
            lambda timeout: self._core.delete_namespaced_service(
                name,
                namespace,
                body=_only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    # ----------------------------------------------------------------- service selectors

    def patch_service(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Strategic-merge patch; `None` values remove keys (e.g. from `spec.selector`)."""
        self._call(
            "patch",
            f"service {namespace}/{name}",
            lambda timeout: self._core.patch_namespaced_service(
                name, namespace, patch, _preload_content=False, _request_timeout=timeout
            ),
        )

    # ----------------------------------------------------------------- ingresses

    def read_ingress(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(
            f"ingress {namespace}/{name}",
            lambda timeout: self._networking.read_namespaced_ingress(
                name, namespace, _preload_content=False, _request_timeout=timeout
            ),
        )

    def create_ingress(self, namespace: str, body: dict[str, Any]) -> None:
        self._create_unless_exists(
            f"ingress {namespace}/{body['metadata']['name']}",
            lambda timeout: self._networking.create_namespaced_ingress(
                namespace, body, _preload_content=False, _request_timeout=timeout
            ),
        )

    def patch_ingress(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Strategic-merge patch; `None` values remove keys (e.g. annotations)."""
        self._call(
            "patch",
            f"ingress {namespace}/{name}",
            lambda timeout: self._networking.patch_namespaced_ingress(
                name, namespace, patch, _preload_content=False, _request_timeout=timeout
            ),
        )

    def delete_ingress(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        self._delete_unless_gone(
            f"ingress {namespace}/{name}",
            lambda timeout: self._networking.delete_namespaced_ingress(
                name,
                namespace,
                body=_only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    # The Ingress calls share these: absent is None on read, AlreadyExists on create and
    # NotFound on delete are success, which keeps every call safe to repeat.

    def _read_or_none(self, what: str, request: Callable[[Timeouts], Any]) -> dict[str, Any] | None:
        try:
            response = self._call("get", what, request)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    def _create_unless_exists(self, what: str, request: Callable[[Timeouts], Any]) -> None:
        try:
            self._call("create", what, request)
        except ApiException as error:
            if error.status != 409 or "AlreadyExists" not in str(error.body):
                raise

    def _delete_unless_gone(self, what: str, request: Callable[[Timeouts], Any]) -> None:
        """Deletes; an object already gone is success, and so is a uid precondition that no
        longer holds: the object the bot created is gone, and the one now at that name is
        somebody else's, which the bot must not delete."""
        try:
            self._call("delete", what, request)
        except ApiException as error:
            if error.status == 409 and "Precondition failed" in str(error.body):
                log.warning(
                    "not deleting %s: it was replaced by an object canary-bot did not create", what
                )
                return
            if error.status != 404:
                raise

    # ----------------------------------------------------------------- events

    def emit_event(
        self,
        *,
        involved: dict[str, Any],
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """A core/v1 Event on `involved`, so `kubectl describe` shows the rollout's history.

        Best effort: an Event that cannot be written is logged, never fails a rollout.
        """
        metadata = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
                "labels": dict(MANAGED_BY),
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "apps/v1"),
                "kind": involved.get("kind", "Deployment"),
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "canary-bot"},
            "reportingComponent": "canary-bot",
            "reportingInstance": "canary-bot",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._call(
                "create",
                f"event {reason} on {metadata['namespace']}/{metadata['name']}",
                lambda timeout: self._core.create_namespaced_event(
                    metadata["namespace"],
                    body,
                    _preload_content=False,
                    _request_timeout=timeout,
                ),
            )
        except (ApiException, KubeUnavailable) as error:
            log.warning("could not record event %s: %s", reason, error)


def _where(kind: CustomKind, namespace: str) -> tuple[str, str, str, str]:
    """The leading arguments of every namespaced `CustomObjectsApi` call."""
    return kind.group, kind.version, namespace, kind.plural


def _json(response: Any) -> dict[str, Any]:
    data = json.loads(response.data)
    assert isinstance(data, dict)
    return data

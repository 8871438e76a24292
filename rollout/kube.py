"""The bot's one door to the Kubernetes API: the official client, plain dicts, bounded retries.

Routers get a `KubeGateway` injected; they never load a kubeconfig or build clients. Responses
are read as the server's JSON (camelCase dicts) rather than the client's model objects, so a
router can copy an object faithfully. Every write is idempotent by construction (absolute
values, AlreadyExists on create and NotFound on delete are success), which is what makes
retrying with backoff and jitter (tenacity) safe.

Every call has ONE deadline (`kubernetes.request_timeout`, retries included): see
`rollout/kube_call.py`. While a beat observes the cluster, reads by name are served from one
LIST per namespace and kind (`rollout/kube_reads.py`). The calls are split by idea: this
module has the built-in kinds and Events, `kube_custom.py` the custom resources,
`kube_base.py` what they share.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from rollout import kube_reads
from rollout.kube_base import JSON, MANAGED_BY, PAGE_SIZE, ListRequest, only_if
from rollout.kube_call import (
    KubeConflict,
    KubeDeadlineExceeded,
    KubeUnavailable,
)
from rollout.kube_custom import CustomKind, CustomObjectCalls
from rollout.kube_reads import Collection

log = logging.getLogger(__name__)

__all__ = [
    "MANAGED_BY",
    "CustomKind",
    "KubeConflict",
    "KubeDeadlineExceeded",
    "KubeGateway",
    "KubeUnavailable",
]


def deployments(namespace: str) -> Collection:
    return Collection("deployments", namespace)


def services(namespace: str) -> Collection:
    return Collection("services", namespace)


def ingresses(namespace: str) -> Collection:
    return Collection("ingresses", namespace)


class KubeGateway(CustomObjectCalls):
    # ----------------------------------------------------------------- deployments

    def read_deployment(self, namespace: str, name: str) -> JSON | None:
        return self._observed(
            deployments(namespace),
            name,
            what=f"deployment {namespace}/{name}",
            get=lambda timeout: self._apps.read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=timeout
            ),
            list_page=self._pages(self._apps.list_namespaced_deployment, namespace),
        )

    def create_deployment(self, namespace: str, body: JSON) -> None:
        self._writing(deployments(namespace), body["metadata"]["name"])
        self._create_unless_exists(
            f"deployment {namespace}/{body['metadata']['name']}",
            lambda timeout: self._apps.create_namespaced_deployment(
                namespace, body, _preload_content=False, _request_timeout=timeout
            ),
        )

    def list_replica_sets(self, namespace: str, *, selector: dict[str, str]) -> list[JSON]:
        """The ReplicaSets whose labels match `selector` (a Deployment's `matchLabels`): from
        the beat's one LIST of the namespace while a beat observes, else a LIST by selector."""
        where = Collection("replicasets", namespace)
        beat = kube_reads.current()
        if beat is not None:
            found = beat.items(
                where,
                list_all=lambda: self._list_all(
                    where, self._pages(self._apps.list_namespaced_replica_set, namespace)
                ),
            )
            return [rs for rs in found if _matches(rs, selector)]
        label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        return self._list_all(
            Collection(f"replicasets ({label_selector})", namespace),
            self._pages(
                self._apps.list_namespaced_replica_set, namespace, label_selector=label_selector
            ),
        )

    def patch_deployment(self, namespace: str, name: str, patch: JSON) -> None:
        """Strategic-merge patch (the client picks it for a dict body on Deployments)."""
        self._writing(deployments(namespace), name)
        self._call(
            "patch",
            f"deployment {namespace}/{name}",
            lambda timeout: self._apps.patch_namespaced_deployment(
                name, namespace, patch, _preload_content=False, _request_timeout=timeout
            ),
        )

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self._writing(deployments(namespace), name)
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
        self._writing(deployments(namespace), name)
        self._delete_unless_gone(
            f"deployment {namespace}/{name}",
            lambda timeout: self._apps.delete_namespaced_deployment(
                name,
                namespace,
                body=only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    # ----------------------------------------------------------------- services

    def read_service(self, namespace: str, name: str) -> JSON | None:
        return self._observed(
            services(namespace),
            name,
            what=f"service {namespace}/{name}",
            get=lambda timeout: self._core.read_namespaced_service(
                name, namespace, _preload_content=False, _request_timeout=timeout
            ),
            list_page=self._pages(self._core.list_namespaced_service, namespace),
        )

    def create_service(self, namespace: str, body: JSON) -> None:
        self._writing(services(namespace), body["metadata"]["name"])
        self._create_unless_exists(
            f"service {namespace}/{body['metadata']['name']}",
            lambda timeout: self._core.create_namespaced_service(
                namespace, body, _preload_content=False, _request_timeout=timeout
            ),
        )

    def delete_service(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        self._writing(services(namespace), name)
        self._delete_unless_gone(
            f"service {namespace}/{name}",
            lambda timeout: self._core.delete_namespaced_service(
                name,
                namespace,
                body=only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    def patch_service(self, namespace: str, name: str, patch: JSON) -> None:
        """Strategic-merge patch; `None` values remove keys (e.g. from `spec.selector`)."""
        self._writing(services(namespace), name)
        self._call(
            "patch",
            f"service {namespace}/{name}",
            lambda timeout: self._core.patch_namespaced_service(
                name, namespace, patch, _preload_content=False, _request_timeout=timeout
            ),
        )

    # ----------------------------------------------------------------- ingresses

    def read_ingress(self, namespace: str, name: str) -> JSON | None:
        return self._observed(
            ingresses(namespace),
            name,
            what=f"ingress {namespace}/{name}",
            get=lambda timeout: self._networking.read_namespaced_ingress(
                name, namespace, _preload_content=False, _request_timeout=timeout
            ),
            list_page=self._pages(self._networking.list_namespaced_ingress, namespace),
        )

    def create_ingress(self, namespace: str, body: JSON) -> None:
        self._writing(ingresses(namespace), body["metadata"]["name"])
        self._create_unless_exists(
            f"ingress {namespace}/{body['metadata']['name']}",
            lambda timeout: self._networking.create_namespaced_ingress(
                namespace, body, _preload_content=False, _request_timeout=timeout
            ),
        )

    def patch_ingress(self, namespace: str, name: str, patch: JSON) -> None:
        """Strategic-merge patch; `None` values remove keys (e.g. annotations)."""
        self._writing(ingresses(namespace), name)
        self._call(
            "patch",
            f"ingress {namespace}/{name}",
            lambda timeout: self._networking.patch_namespaced_ingress(
                name, namespace, patch, _preload_content=False, _request_timeout=timeout
            ),
        )

    def delete_ingress(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        self._writing(ingresses(namespace), name)
        self._delete_unless_gone(
            f"ingress {namespace}/{name}",
            lambda timeout: self._networking.delete_namespaced_ingress(
                name,
                namespace,
                body=only_if(uid),
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    @staticmethod
    def _pages(method: Any, namespace: str, **query: str) -> ListRequest:
        """One page of a namespaced LIST by the client's `list_namespaced_*` method."""

        def page(timeout: Any, token: str | None) -> Any:
            return method(
                namespace,
                limit=PAGE_SIZE,
                _continue=token,
                _preload_content=False,
                _request_timeout=timeout,
                **query,
            )

        return page

    # ----------------------------------------------------------------- events

    def emit_event(
        self,
        *,
        involved: JSON,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """A core/v1 Event on `involved`, so `kubectl describe` shows the rollout's history.

        Best effort: an Event that cannot be written is logged, never fails a rollout.
        """
        metadata = involved["metadata"]
        body = event_body(involved, reason=reason, message=message, warning=warning)
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


def event_body(involved: JSON, *, reason: str, message: str, warning: bool) -> JSON:
    """The core/v1 Event the bot writes about `involved`."""
    metadata = involved["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
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


def _matches(obj: JSON, selector: dict[str, str]) -> bool:
    """Equality `matchLabels` against the object's labels, as the API server selects."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())

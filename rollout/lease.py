"""The Lease one replica holds to lead, read and written through the official client.

`kubernetes.leaderelection` (client 35) offers only a ConfigMap lock and unbounded calls, so
this is the Lease lock of client-go's `resourcelock.LeaseLock` in a few calls, each bounded by
`BoundedCall` with the deadline the elector gives it. A replace carries the `resourceVersion`
that was read, so of two replicas taking over the same expired Lease exactly one succeeds (the
other gets a 409 Conflict and reads again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from rollout.kube_call import BoundedCall, KubeConflict, Timeouts


@dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    """What a Lease says about its holder; `version` is the `resourceVersion` it was read at."""

    holder: str | None
    duration_s: int
    acquired: datetime | None
    renewed: datetime | None
    transitions: int
    version: str | None = None


class LeaseLock:
    def __init__(self, api_client: k8s.ApiClient, *, name: str, namespace: str) -> None:
        self._api = k8s.CoordinationV1Api(api_client)
        self.name = name
        self.namespace = namespace

    @property
    def describe(self) -> str:
        return f"lease {self.namespace}/{self.name}"

    def get(self, *, budget: float) -> LeaseRecord | None:
        """The Lease, or None when there is none yet."""

        def read(timeouts: Timeouts) -> k8s.V1Lease | None:
            try:
                return self._api.read_namespaced_lease(
                    self.name, self.namespace, _request_timeout=timeouts
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise

        lease = BoundedCall(request_timeout=budget)("get", self.describe, read)
        return None if lease is None else _record(lease)

    def create(self, record: LeaseRecord, *, budget: float) -> bool:
        """True when this call created the Lease; False when someone else did first."""
        body = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=_spec(record),
        )

        def create(timeouts: Timeouts) -> object:
            return self._api.create_namespaced_lease(
                self.namespace, body, _request_timeout=timeouts
            )

        try:
            BoundedCall(request_timeout=budget)("create", self.describe, create)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def update(self, record: LeaseRecord, *, budget: float) -> bool:
        """Replace the Lease if it is still at `record.version`; False on a conflict."""
        body = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=record.version
            ),
            spec=_spec(record),
        )

        def replace(timeouts: Timeouts) -> object:
            return self._api.replace_namespaced_lease(
                self.name, self.namespace, body, _request_timeout=timeouts
            )

        try:
            BoundedCall(request_timeout=budget)("replace", self.describe, replace)
        except KubeConflict:
            return False
        return True


def _spec(record: LeaseRecord) -> k8s.V1LeaseSpec:
    return k8s.V1LeaseSpec(
        holder_identity=record.holder,
        lease_duration_seconds=record.duration_s,
        acquire_time=record.acquired,
        renew_time=record.renewed,
        lease_transitions=record.transitions,
    )


def _record(lease: k8s.V1Lease) -> LeaseRecord:
    spec = lease.spec or k8s.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or None,
        duration_s=int(spec.lease_duration_seconds or 0),
        acquired=spec.acquire_time,
        renewed=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
        version=lease.metadata.resource_version if lease.metadata else None,
    )

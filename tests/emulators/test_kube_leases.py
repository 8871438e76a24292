"""coordination.k8s.io/v1 Leases through the official client, and cutting one client off.

Leader election rests on two things the emulator must do as a real API server does: a
replace carrying an old `resourceVersion` is a 409 (so two candidates cannot both take over),
and a Lease is validated like any other built-in kind.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from emulators.kube import KubeEmulator


def lease(name: str, holder: str) -> client.V1Lease:
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=15,
            acquire_time=datetime.now(UTC),
            renew_time=datetime.now(UTC),
            lease_transitions=0,
        ),
    )


def test_lease_create_get_replace_conflict_delete(api: client.ApiClient, ns: str) -> None:
    leases = client.CoordinationV1Api(api)
    created = leases.create_namespaced_lease(ns, lease("bot", "pod-a"))
    assert created.spec.holder_identity == "pod-a"
    with pytest.raises(ApiException) as caught:
        leases.create_namespaced_lease(ns, lease("bot", "pod-b"))
    assert caught.value.status == 409 and "AlreadyExists" in caught.value.body

    # Two candidates read the same version; the first replace wins, the second is refused.
    read_a = leases.read_namespaced_lease("bot", ns)
    read_b = leases.read_namespaced_lease("bot", ns)
    read_a.spec.holder_identity, read_a.spec.lease_transitions = "pod-a", 1
    won = leases.replace_namespaced_lease("bot", ns, read_a)
    assert won.metadata.resource_version != read_b.metadata.resource_version
    read_b.spec.holder_identity = "pod-b"
    with pytest.raises(ApiException) as caught:
        leases.replace_namespaced_lease("bot", ns, read_b)
    assert caught.value.status == 409
    assert caught.value.reason == "Conflict"
    current = leases.read_namespaced_lease("bot", ns)
    assert (current.spec.holder_identity, current.spec.lease_transitions) == ("pod-a", 1)

    leases.delete_namespaced_lease("bot", ns)
    with pytest.raises(ApiException) as caught:
        leases.read_namespaced_lease("bot", ns)
    assert caught.value.status == 404


def test_an_invalid_lease_is_rejected(api: client.ApiClient, kube: KubeEmulator, ns: str) -> None:
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "bad"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": "fifteen"},
    }
    with pytest.raises(ApiException) as caught:
        client.CoordinationV1Api(api).create_namespaced_lease(ns, body)
    assert caught.value.status == 422
    assert kube.get("coordination.k8s.io/v1", "Lease", ns, "bad") is None


def test_a_cut_off_client_gets_no_answer_while_others_do(
    api: client.ApiClient, kube: KubeEmulator, ns: str
) -> None:
    cut = kube.api_client()
    cut.user_agent = "canary-bot/1 (pod-b)"
    cut.configuration.retries = False
    try:
        leases = client.CoordinationV1Api(cut)
        leases.create_namespaced_lease(ns, lease("cut", "pod-b"))
        kube.faults.cut_off("(pod-b)")
        with pytest.raises(urllib3.exceptions.HTTPError):
            leases.read_namespaced_lease("cut", ns, _request_timeout=2)
        assert kube.faults.refused >= 1
        # Everyone else is served as before.
        other = client.CoordinationV1Api(api).read_namespaced_lease("cut", ns)
        assert other.spec.holder_identity == "pod-b"
        kube.faults.reconnect()
        assert leases.read_namespaced_lease("cut", ns).spec.holder_identity == "pod-b"
    finally:
        cut.close()

"""The Deployment controller: pods, readiness after `ready_delay`, `hold_ready`, status."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from emulators.kube import KubeEmulator
from tests.builders import deployment

READY_DELAY = 0.3


def wait_for(predicate: Callable[[], Any], *, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def witness_ready(kube: KubeEmulator, ns: str) -> None:
    """Create a one-pod Deployment after everything in `ns` and wait until its pod is ready.

    The controller is one thread that handles due Deployments in time order, and among those
    due together in (namespace, name) order, where the witness's namespace sorts after `ns`.
    So once the witness's pod is ready, every pod in `ns` created before it has reached its
    ready time and been dealt with: what a hold (or a rest) must prevent would have happened.
    """
    kube.seed(deployment("witness", replicas=1, namespace=f"{ns}-witness"))
    wait_for(
        lambda: (
            (kube.get("apps/v1", "Deployment", f"{ns}-witness", "witness") or {})
            .get("status", {})
            .get("readyReplicas")
            == 1
        )
    )


def versions(kube: KubeEmulator, ns: str) -> dict[tuple[str, str], str]:
    """The resourceVersion of every Deployment and Pod in `ns`."""
    return {
        (kind, obj["metadata"]["name"]): obj["metadata"]["resourceVersion"]
        for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Pod"))
        for obj in kube.list(api_version, kind, ns)
    }


def pods(core: client.CoreV1Api, ns: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(ns).items)


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def conditions(dep: client.V1Deployment) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in dep.status.conditions or []}


def test_pods_become_ready_after_the_delay(api: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    started = time.monotonic()
    created = apps.create_namespaced_deployment(ns, deployment("web", track="stable"))
    wait_for(lambda: len(pods(core, ns)) == 2 and all(ready(p) for p in pods(core, ns)))
    assert time.monotonic() - started >= READY_DELAY  # a lower bound: load only lengthens it

    for pod in pods(core, ns):
        assert pod.metadata.name.startswith("web-")
        template_hash = pod.metadata.labels["pod-template-hash"]
        assert pod.metadata.name.rsplit("-", 1)[0] == f"web-{template_hash}"
        assert pod.metadata.labels["app"] == "web" and pod.metadata.labels["track"] == "stable"
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.uid) == ("Deployment", "web", created.metadata.uid)
        assert [(c.name, c.image) for c in pod.spec.containers] == [("app", "web:v1")]
        assert pod.status.phase == "Running"

    status = wait_for(lambda: apps.read_namespaced_deployment_status("web", ns).status)
    dep = apps.read_namespaced_deployment("web", ns)
    assert dep.status.observed_generation == dep.metadata.generation
    assert (dep.status.replicas, dep.status.updated_replicas) == (2, 2)
    assert (dep.status.ready_replicas, dep.status.available_replicas) == (2, 2)
    assert dep.status.unavailable_replicas is None  # zero counts are omitted
    assert conditions(dep) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    assert status.conditions


def test_new_template_replaces_pods_and_hold_ready_holds(
    api: client.ApiClient, kube: KubeEmulator, ns: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web"))
    wait_for(lambda: apps.read_namespaced_deployment("web", ns).status.ready_replicas == 2)
    old_names = {p.metadata.name for p in pods(core, ns)}

    kube.hold_ready(ns, "web")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:v2"}]}}}}
    apps.patch_namespaced_deployment("web", ns, patch)
    wait_for(lambda: len(pods(core, ns)) == 4)
    witness_ready(kube, ns)  # the held pods' delay has run out: they would be ready now
    held = pods(core, ns)
    new = [p for p in held if p.metadata.name not in old_names]
    assert len(new) == 2 and not any(ready(p) for p in new)
    assert all(p.spec.containers[0].image == "web:v2" for p in new)
    assert all(ready(p) for p in held if p.metadata.name in old_names)  # old ones still serve
    dep = apps.read_namespaced_deployment("web", ns)
    assert (dep.status.replicas, dep.status.updated_replicas, dep.status.ready_replicas) == (
        4,
        2,
        2,
    )
    assert dep.status.unavailable_replicas == 2
    assert conditions(dep)["Progressing"] == ("True", "ReplicaSetUpdated")

    kube.hold_ready(ns, "web", held=False)
    wait_for(lambda: {p.metadata.name for p in pods(core, ns)} == {p.metadata.name for p in new})
    dep = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("web", ns)).status.ready_replicas == 2
            and d.status.replicas == 2
            and d
        )
    )
    assert conditions(dep)["Progressing"] == ("True", "NewReplicaSetAvailable")


def test_scaling_and_replacing_lost_pods(api: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web", replicas=1))
    first = wait_for(lambda: pods(core, ns))[0].metadata.name
    core.delete_namespaced_pod(first, ns)
    wait_for(lambda: [p.metadata.name for p in pods(core, ns)] not in ([], [first]))

    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
    wait_for(lambda: apps.read_namespaced_deployment("web", ns).status.ready_replicas == 3)
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 0}})
    wait_for(lambda: not pods(core, ns))
    dep = wait_for(
        lambda: (d := apps.read_namespaced_deployment("web", ns)).status.replicas is None and d
    )
    assert dep.status.ready_replicas is None and dep.status.observed_generation == 3


def test_deleting_a_deployment_deletes_its_pods(
    api: client.ApiClient, kube: KubeEmulator, ns: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web", replicas=3))
    apps.create_namespaced_deployment(ns, deployment("other", replicas=1))
    wait_for(lambda: len(pods(core, ns)) == 4)
    apps.delete_namespaced_deployment("web", ns)
    assert [p.metadata.labels["app"] for p in pods(core, ns)] == ["other"]
    assert kube.list("v1", "Pod", ns, label_selector="app=web") == []


def test_controller_status_writes_make_old_copies_stale(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(ns, deployment("web"))
    wait_for(lambda: apps.read_namespaced_deployment("web", ns).status.ready_replicas == 2)
    created.spec.replicas = 5
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", ns, created)
    assert caught.value.status == 409


def test_progress_deadline(api: client.ApiClient, kube: KubeEmulator, ns: str) -> None:
    apps = client.AppsV1Api(api)
    body = deployment("web")
    body["spec"]["progressDeadlineSeconds"] = 1
    kube.hold_ready(ns, "web")
    apps.create_namespaced_deployment(ns, body)
    dep = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("web", ns)).status.conditions
            and conditions(d)["Progressing"][0] == "False"
            and d
        ),
        timeout=4,
    )
    assert conditions(dep) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("False", "ProgressDeadlineExceeded"),
    }
    kube.hold_ready(ns, "web", held=False)


def test_many_deployments_settle_and_stay_quiet(kube: KubeEmulator, ns: str) -> None:
    for i in range(300):
        kube.seed(deployment(f"d{i}", replicas=1, namespace=ns))
    # A generous bound, not a speed claim: the 300 settle in about 1 s on the 2-core machine.
    wait_for(
        lambda: all(
            (d.get("status") or {}).get("readyReplicas") == 1
            for d in kube.list("apps/v1", "Deployment", ns)
        ),
        timeout=60,
    )
    settled = versions(kube, ns)
    witness_ready(kube, ns)  # the controller has run on past every timer of the 300
    assert versions(kube, ns) == settled  # nothing rewritten at rest

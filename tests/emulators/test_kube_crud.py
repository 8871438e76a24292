"""The Kubernetes kube as the official client sees it: CRUD, lists, errors, metadata."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from emulators.kube import KubeEmulator
from tests.builders import deployment


def settled(apps: client.AppsV1Api, ns: str, name: str) -> client.V1Deployment:
    """The Deployment once the controller is done with it, so a read-modify-write is not raced
    by its status writes (a real client would retry the 409 instead)."""
    deadline = time.monotonic() + 5
    while True:
        dep = apps.read_namespaced_deployment(name, ns)
        status, want = dep.status, dep.spec.replicas
        if (
            status is not None
            and status.observed_generation == dep.metadata.generation
            and (status.ready_replicas or 0) == want == (status.replicas or 0)
        ):
            return dep
        assert time.monotonic() < deadline, "the controller never settled"
        time.sleep(0.02)


def status_body(exc: ApiException) -> dict[str, object]:
    body: dict[str, object] = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def test_deployment_crud_with_server_managed_metadata(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(ns, deployment("web"))
    meta = created.metadata
    assert meta.namespace == ns
    assert meta.uid and meta.creation_timestamp is not None
    assert meta.generation == 1
    assert int(meta.resource_version) > 0
    # Server-side defaults are visible, as on a real cluster.
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    read = settled(apps, ns, "web")
    read.spec.template.spec.containers[0].image = "shop/web:v2"
    replaced = apps.replace_namespaced_deployment("web", ns, read)
    assert replaced.metadata.generation == 2
    assert int(replaced.metadata.resource_version) > int(read.metadata.resource_version)
    assert replaced.metadata.uid == meta.uid

    # A metadata-only change does not bump the generation.
    labelled = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 2

    result = apps.delete_namespaced_deployment("web", ns)
    assert result.status == "Success"
    with pytest.raises(ApiException) as caught:
        apps.read_namespaced_deployment("web", ns)
    assert caught.value.status == 404
    assert status_body(caught.value)["reason"] == "NotFound"


def test_service_ingress_configmap_and_events(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    svc = core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(
                selector={"app": "web"}, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    assert svc.spec.cluster_ip and svc.spec.ports[0].target_port == 80
    svc = core.patch_namespaced_service("web", ns, {"spec": {"selector": {"track": "stable"}}})
    assert svc.spec.selector == {"app": "web", "track": "stable"}
    deleted = core.delete_namespaced_service("web", ns)
    assert deleted.metadata.name == "web"  # services answer a delete with the object

    net = client.NetworkingV1Api(api)
    ingress = {
        "metadata": {"name": "web", "annotations": {"nginx.ingress.kubernetes.io/canary": "true"}},
        "spec": {
            "rules": [
                {
                    "host": "shop.example",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }
    net.create_namespaced_ingress(ns, ingress)
    patched = net.patch_namespaced_ingress(
        "web",
        ns,
        {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary-weight": "20"}}},
    )
    assert patched.metadata.annotations == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "20",
    }
    assert net.delete_namespaced_ingress("web", ns).status == "Success"

    cm = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"})
    )
    cm.data["b"] = "2"
    assert core.replace_namespaced_config_map("settings", ns, cm).data == {"a": "1", "b": "2"}

    event = core.create_namespaced_event(
        ns,
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="web."),
            involved_object=client.V1ObjectReference(kind="Deployment", name="web", namespace=ns),
            reason="CanaryStarted",
            message="canary at 5%",
            type="Normal",
        ),
    )
    assert event.metadata.name.startswith("web.") and len(event.metadata.name) > 4
    found = core.list_namespaced_event(ns, field_selector="involvedObject.name=web")
    assert [e.reason for e in found.items] == ["CanaryStarted"]

    events = client.EventsV1Api(api)
    new_event = events.create_namespaced_event(
        ns,
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="web.1"),
            event_time="2025-01-01T00:00:00.000000Z",
            reason="Promoted",
            note="canary promoted",
            type="Normal",
            action="Promote",
            reporting_controller="canary-bot",
            reporting_instance="canary-bot-0",
            regarding=client.V1ObjectReference(kind="Deployment", name="web", namespace=ns),
        ),
    )
    assert new_event.note == "canary promoted"
    assert [e.metadata.name for e in events.list_namespaced_event(ns).items] == ["web.1"]


def test_label_and_field_selectors(api: client.ApiClient, kube: KubeEmulator, ns: str) -> None:
    core = client.CoreV1Api(api)
    for name, labels in [
        ("a", {"app": "web", "track": "stable"}),
        ("b", {"app": "web", "track": "canary"}),
        ("c", {"app": "db"}),
    ]:
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: str) -> list[str]:
        return [cm.metadata.name for cm in core.list_namespaced_config_map(ns, **kwargs).items]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app==web,track!=canary") == ["a"]
    assert names(label_selector="track in (canary, stable)") == ["a", "b"]
    assert names(label_selector="track notin (canary)") == ["a", "c"]
    assert names(label_selector="track") == ["a", "b"]
    assert names(label_selector="!track") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b", label_selector="app=web") == ["a"]
    assert kube.list("v1", "ConfigMap", ns, label_selector="app=db")[0]["metadata"]["name"] == "c"

    listed = core.list_namespaced_config_map(ns, limit=2)
    assert len(listed.items) == 2 and listed.metadata._continue
    rest = core.list_namespaced_config_map(ns, limit=2, _continue=listed.metadata._continue)
    assert [cm.metadata.name for cm in rest.items] == ["c"]

    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map(ns, field_selector="data.a=1")
    assert caught.value.status == 400
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map(ns, label_selector="app in web")
    assert caught.value.status == 400


def test_lists_are_typed_and_cluster_wide(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("one"))
    apps.create_namespaced_deployment(f"{ns}-other", deployment("two"))
    raw = api.call_api(
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        "GET",
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    assert raw["kind"] == "DeploymentList" and raw["apiVersion"] == "apps/v1"
    assert raw["metadata"]["resourceVersion"]
    assert raw["items"][0]["kind"] == "Deployment"
    everywhere = apps.list_deployment_for_all_namespaces(label_selector="app in (one,two)")
    assert {(d.metadata.namespace, d.metadata.name) for d in everywhere.items} == {
        (ns, "one"),
        (f"{ns}-other", "two"),
    }
    namespaces = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    assert {ns, f"{ns}-other"} <= namespaces


def test_conflicts_and_bad_requests(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web"))
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(ns, deployment("web"))
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "AlreadyExists"

    stale = settled(apps, ns, "web")
    fresh = apps.read_namespaced_deployment("web", ns)
    fresh.spec.replicas = 3
    apps.replace_namespaced_deployment("web", ns, fresh)
    stale.spec.replicas = 4
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", ns, stale)
    assert caught.value.status == 409
    body = status_body(caught.value)
    assert body["reason"] == "Conflict"
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3

    # A resourceVersion inside a patch is a precondition too.
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web", ns, {"metadata": {"resourceVersion": stale.metadata.resource_version}}
        )
    assert caught.value.status == 409

    renamed = deployment("other")
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", ns, renamed)
    assert caught.value.status == 400
    assert status_body(caught.value)["reason"] == "BadRequest"

    elsewhere = deployment("web2")
    elsewhere["metadata"]["namespace"] = "not-" + ns  # type: ignore[index]
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(ns, elsewhere)
    assert caught.value.status == 400

    with pytest.raises(ApiException) as caught:
        apps.delete_namespaced_deployment(
            "web",
            ns,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1")),
        )
    assert caught.value.status == 409

    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("missing", ns, deployment("missing"))
    assert caught.value.status == 404

    with pytest.raises(ApiException) as caught:
        api.call_api(
            f"/apis/apps/v1/namespaces/{ns}/deployments/web",
            "POST",
            body=deployment("web"),
            header_params={"Content-Type": "application/json"},
            auth_settings=["BearerToken"],
        )
    assert caught.value.status == 405
    assert status_body(caught.value)["reason"] == "MethodNotAllowed"


def test_status_subresource_owns_status(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web", replicas=0))
    main = apps.patch_namespaced_deployment(
        "web", ns, {"status": {"observedGeneration": 99}, "metadata": {"labels": {"a": "b"}}}
    )
    assert main.status.observed_generation != 99
    assert main.metadata.labels["a"] == "b"

    client.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    # ConfigMaps have no status subresource.
    with pytest.raises(ApiException) as caught:
        api.call_api(
            f"/api/v1/namespaces/{ns}/configmaps/x/status", "GET", auth_settings=["BearerToken"]
        )
    assert caught.value.status == 404


def test_seed_get_and_discovery(api: client.ApiClient, kube: KubeEmulator, ns: str) -> None:
    seeded = kube.seed(
        {
            **deployment("seeded"),
            "metadata": {"name": "seeded", "namespace": ns, "labels": {"app": "seeded"}},
        }
    )
    got = kube.get("apps/v1", "Deployment", ns, "seeded")
    assert got is not None and got["metadata"]["uid"] == seeded["metadata"]["uid"]
    got["spec"]["replicas"] = 100  # a copy: the store is untouched
    assert kube.get("apps/v1", "Deployment", ns, "seeded")["spec"]["replicas"] == 2  # type: ignore[index]
    assert kube.get("apps/v1", "Deployment", ns, "absent") is None
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "networking.k8s.io", "events.k8s.io"} <= groups
    resources = {r.name for r in client.AppsV1Api(api).get_api_resources().resources}
    assert {"deployments", "deployments/scale", "deployments/status"} <= resources

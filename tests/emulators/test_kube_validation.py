"""Writes are validated against the real schemas: a bad object is a 422 and is never stored."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from emulators.kube import ApiError, KubeEmulator
from tests.builders import deployment


def invalid(exc: ApiException) -> dict[str, str]:
    """The causes of a 422, by field."""
    assert exc.status == 422
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
            "spec.template.spec.containers[0].name",
        ),
        (lambda d: d["spec"].__setitem__("replicas", "three"), "spec.replicas"),
        (
            lambda d: d["spec"]["template"]["metadata"].__setitem__("labels", {"app": "other"}),
            "spec.template.metadata.labels",
        ),
        (lambda d: d["spec"].__setitem__("replicaz", 2), "spec.replicaz"),
        (lambda d: d["metadata"].__setitem__("name", "Not_A_Name"), "metadata.name"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("image"),
            "spec.template.spec.containers[0].image",
        ),
    ],
    ids=[
        "container-without-name",
        "replicas-string",
        "selector-mismatch",
        "unknown-field",
        "bad-name",
        "no-image",
    ],
)
def test_invalid_deployment_is_rejected_and_not_stored(
    api: client.ApiClient, kube: KubeEmulator, ns: str, mutate: Any, field: str
) -> None:
    body = deployment("web")
    mutate(body)
    with pytest.raises(ApiException) as caught:
        client.AppsV1Api(api).create_namespaced_deployment(ns, body)
    assert field in invalid(caught.value)
    assert kube.list("apps/v1", "Deployment", ns) == []


def test_invalid_patches_leave_the_object_alone(
    api: client.ApiClient, kube: KubeEmulator, ns: str
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web"))
    before = kube.get("apps/v1", "Deployment", ns, "web")
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web", ns, [{"op": "replace", "path": "/spec/replicas", "value": "three"}]
        )
    assert "spec.replicas" in invalid(caught.value)
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web", ns, {"spec": {"selector": {"matchLabels": {"app": "web", "track": "x"}}}}
        )
    assert "spec.selector" in invalid(caught.value)  # immutable, and no longer matching
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": "many"}})
    assert "spec.replicas" in invalid(caught.value)
    after = kube.get("apps/v1", "Deployment", ns, "web")
    assert before is not None and after is not None
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_invalid_service_and_ingress(api: client.ApiClient, ns: str) -> None:
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(api).create_namespaced_service(
            ns, {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}}
        )
    assert "spec.ports" in invalid(caught.value)
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(api).create_namespaced_ingress(
            ns,
            {
                "metadata": {"name": "web"},
                "spec": {
                    "rules": [
                        {
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "backend": {
                                            "service": {"name": "web", "port": {"number": 80}}
                                        },
                                    }
                                ]
                            }
                        }
                    ]
                },
            },
        )
    assert "spec.rules[0].http.paths[0].pathType" in invalid(caught.value)


VIRTUAL_SERVICE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "web"},
    "spec": {
        "hosts": ["web"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "web", "subset": "stable"}, "weight": 90},
                    {"destination": {"host": "web", "subset": "canary"}, "weight": 10},
                ]
            }
        ],
    },
}

HTTP_ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "web"},
    "spec": {
        "parentRefs": [{"name": "gateway"}],
        "rules": [
            {
                "backendRefs": [
                    {"name": "web", "port": 80, "weight": 90},
                    {"name": "web-canary", "port": 80, "weight": 10},
                ]
            }
        ],
    },
}


def test_virtual_service(api: client.ApiClient, kube: KubeEmulator, ns: str) -> None:
    custom = client.CustomObjectsApi(api)
    args = ("networking.istio.io", "v1", ns, "virtualservices")
    created = custom.create_namespaced_custom_object(*args, VIRTUAL_SERVICE)
    assert created["spec"]["http"][0]["route"][1]["weight"] == 10
    # Every served version reaches the same object.
    old_version = custom.get_namespaced_custom_object(
        "networking.istio.io", "v1beta1", ns, "virtualservices", "web"
    )
    assert old_version["apiVersion"] == "networking.istio.io/v1beta1"

    bad = copy.deepcopy(VIRTUAL_SERVICE)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["http"][0]["route"][0]["weight"] = "ninety"
    bad["spec"]["htpp"] = []
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*args, bad)
    causes = invalid(caught.value)
    assert {"spec.http[0].route[0].weight", "spec.htpp"} <= causes.keys()
    assert kube.get("networking.istio.io/v1", "VirtualService", ns, "bad") is None

    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            *args, "web", {"spec": {"http": [{"route": [{"weight": 100}]}]}}
        )
    assert "spec.http[0].route[0].destination" in invalid(caught.value)
    stored = kube.get("networking.istio.io/v1", "VirtualService", ns, "web")
    assert stored is not None and stored["spec"] == VIRTUAL_SERVICE["spec"]

    no_kind = {k: v for k, v in VIRTUAL_SERVICE.items() if k != "kind"}
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*args, no_kind)
    assert caught.value.status == 400


def test_http_route(api: client.ApiClient, kube: KubeEmulator, ns: str) -> None:
    custom = client.CustomObjectsApi(api)
    args = ("gateway.networking.k8s.io", "v1", ns, "httproutes")
    created = custom.create_namespaced_custom_object(*args, HTTP_ROUTE)
    # Schema defaults are applied, as the API server does for structural schemas.
    assert created["spec"]["rules"][0]["backendRefs"][0]["kind"] == "Service"
    assert created["spec"]["parentRefs"][0]["group"] == "gateway.networking.k8s.io"

    bad = copy.deepcopy(HTTP_ROUTE)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = 2_000_000
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*args, bad)
    assert "spec.rules[0].backendRefs[0].weight" in invalid(caught.value)
    assert kube.list("gateway.networking.k8s.io/v1", "HTTPRoute", ns) == [
        kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", ns, "web")
    ]


def test_seed_validates_too() -> None:
    kube = KubeEmulator()  # never started: seed() needs no server
    bad = deployment("web")
    bad.update(apiVersion="apps/v1", kind="Deployment")
    bad["spec"]["replicas"] = -1
    with pytest.raises(ApiError) as caught:
        kube.seed(bad)
    assert caught.value.code == 422
    assert kube.get("apps/v1", "Deployment", "default", "web") is None


def test_validation_can_be_turned_off() -> None:
    kube = KubeEmulator(validate=False)
    body = deployment("web")
    body.update(apiVersion="apps/v1", kind="Deployment")
    body["spec"]["replicas"] = "three"
    assert kube.seed(body)["spec"]["replicas"] == "three"

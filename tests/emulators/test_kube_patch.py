"""Patches as the official client sends them: strategic merge, JSON patch, merge patch, scale."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from emulators.kube.patching import merge_patch, strategic_merge_patch
from emulators.kube.schemas import builtin_schema
from tests.builders import deployment


def two_container_deployment(name: str) -> dict[str, Any]:
    """The shared Deployment with a second container, env and a volume: lists to merge by key."""
    body = deployment(name, image="shop/web:v1")
    body["spec"]["template"]["spec"] = {
        "containers": [
            {
                "name": "app",
                "image": "shop/web:v1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 8080}],
            },
            {"name": "proxy", "image": "envoy:v1"},
        ],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    }
    return body


def raw_patch(api: client.ApiClient, path: str, body: Any, content_type: str) -> Any:
    return api.call_api(
        path,
        "PATCH",
        body=body,
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )


def test_strategic_merge_changes_one_container_by_name(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, two_container_deployment("web"))
    patched = apps.patch_namespaced_deployment(
        "web",
        ns,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "shop/web:v2",
                                "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                            }
                        ],
                    }
                }
            }
        },
    )
    containers = patched.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [
        ("app", "shop/web:v2"),
        ("proxy", "envoy:v1"),
    ]
    assert [(e.name, e.value) for e in containers[0].env] == [("A", "1"), ("B", "3"), ("C", "4")]
    assert containers[0].ports[0].container_port == 8080
    assert patched.metadata.generation == 2

    deleted = apps.patch_namespaced_deployment(
        "web",
        ns,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "proxy", "$patch": "delete"}],
                        "volumes": [{"name": "cache", "$patch": "delete"}],
                    }
                }
            }
        },
    )
    assert [c.name for c in deleted.spec.template.spec.containers] == ["app"]
    assert not deleted.spec.template.spec.volumes


def test_json_patch(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, two_container_deployment("web"))
    patched = apps.patch_namespaced_deployment(
        "web",
        ns,
        [
            {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "app"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:v9"},
            {"op": "add", "path": "/metadata/labels", "value": {"track": "stable"}},
            {"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
            {
                "op": "move",
                "from": "/metadata/annotations/track",
                "path": "/metadata/annotations/t",
            },
            {"op": "remove", "path": "/spec/template/spec/containers/1"},
        ],
    )
    assert patched.spec.template.spec.containers[0].image == "web:v9"
    assert len(patched.spec.template.spec.containers) == 1
    assert patched.metadata.labels == {"track": "stable"}
    assert patched.metadata.annotations == {"t": "stable"}

    before = apps.read_namespaced_deployment("web", ns).metadata.generation
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web",
            ns,
            [
                {"op": "replace", "path": "/spec/replicas", "value": 7},
                {"op": "test", "path": "/spec/replicas", "value": 1},
            ],
        )
    assert caught.value.status == 422
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment("web", ns, [{"op": "jump", "path": "/spec"}])
    assert caught.value.status == 400
    after = apps.read_namespaced_deployment("web", ns)
    assert after.metadata.generation == before and after.spec.replicas == 2


def test_merge_patch_replaces_lists_and_null_deletes(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, two_container_deployment("web"))
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    patched = raw_patch(
        api,
        path,
        {
            "metadata": {"labels": {"team": "shop"}},
            "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:v1"}]}}},
        },
        "application/merge-patch+json",
    )
    assert [c["name"] for c in patched["spec"]["template"]["spec"]["containers"]] == ["only"]
    patched = raw_patch(api, path, {"metadata": {"labels": None}}, "application/merge-patch+json")
    assert "labels" not in patched["metadata"]
    with pytest.raises(ApiException) as caught:
        raw_patch(api, path, {"spec": {}}, "application/apply-patch+yaml")
    assert caught.value.status == 415


def test_scale_subresource(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, two_container_deployment("web"))
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas == 2 and scale.status.selector == "app=web"

    patched = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 5}})
    assert patched.spec.replicas == 5
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 5

    scale = apps.read_namespaced_deployment_scale("web", ns)
    read_version = scale.metadata.resource_version
    # Without a resourceVersion the write is unconditional (the controller may have written
    # the Deployment's status since the read).
    scale.metadata.resource_version = None
    scale.spec.replicas = 0
    assert apps.replace_namespaced_deployment_scale("web", ns, scale).spec.replicas == 0
    scale.metadata.resource_version = read_version  # stale now
    scale.spec.replicas = 1
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert caught.value.status == 409
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": -1}})
    assert caught.value.status == 422


def test_custom_resource_patches_and_status(api: client.ApiClient, ns: str) -> None:
    custom = client.CustomObjectsApi(api)
    args = ("argoproj.io", "v1alpha1", ns, "rollouts")
    custom.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "web:v1"}]},
                },
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            },
            "status": {"phase": "ignored on create"},
        },
    )
    obj = custom.patch_namespaced_custom_object(
        *args,
        "web",
        {
            "spec": {"strategy": {"canary": {"steps": [{"setWeight": 50}]}}},
            "status": {"phase": "ignored on the main resource"},
        },
    )
    assert obj["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 50}]
    # The status sent with the main resource is dropped (the kube's Argo controller may
    # have written a status of its own meanwhile).
    assert obj.get("status", {}).get("phase") != "ignored on the main resource"
    assert obj["metadata"]["generation"] == 2

    status = custom.patch_namespaced_custom_object_status(
        *args, "web", {"status": {"phase": "Healthy", "HPAReplicas": 2, "selector": "app=web"}}
    )
    assert status["status"]["phase"] == "Healthy" and status["metadata"]["generation"] == 2
    scale = custom.get_namespaced_custom_object_scale(*args, "web")
    assert scale["spec"]["replicas"] == 2 and scale["status"] == {
        "replicas": 2,
        "selector": "app=web",
    }

    # Replace must carry the current resourceVersion: CRDs refuse unconditional updates.
    current = custom.get_namespaced_custom_object(*args, "web")
    del current["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object(*args, "web", current)
    assert caught.value.status == 422

    with pytest.raises(ApiException) as caught:
        raw_patch(
            api,
            f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/web",
            {"spec": {"replicas": 3}},
            "application/strategic-merge-patch+json",
        )
    assert caught.value.status == 415
    assert json.loads(caught.value.body)["reason"] == "UnsupportedMediaType"


# --- the strategic merge subset, directly -------------------------------------------------------


def _deployment_schema() -> dict[str, Any]:
    return builtin_schema("apps", "v1", "Deployment")


def test_strategic_merge_directives() -> None:
    original: dict[str, Any] = {
        "metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "a",
                            "volumeMounts": [
                                {"name": "v", "mountPath": "/a"},
                                {"name": "v", "mountPath": "/b"},
                            ],
                            "args": ["--one"],
                        },
                    ]
                }
            }
        },
    }
    patch = {
        "metadata": {"finalizers": ["b", "a"], "labels": {"$patch": "replace", "z": "3"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "volumeMounts": [{"mountPath": "/a", "$patch": "delete"}],
                            "args": ["--two"],
                            "$setElementOrder/volumeMounts": [{"mountPath": "/b"}],
                        },
                    ]
                }
            }
        },
    }
    result = strategic_merge_patch(original, patch, _deployment_schema())
    assert result["metadata"] == {"finalizers": ["a", "b"], "labels": {"z": "3"}}
    container = result["spec"]["template"]["spec"]["containers"][0]
    assert container["volumeMounts"] == [{"name": "v", "mountPath": "/b"}]
    assert container["args"] == ["--two"]  # atomic lists are replaced
    assert original["metadata"]["labels"] == {"x": "1", "y": "2"}  # input untouched

    removed = strategic_merge_patch(
        result, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, _deployment_schema()
    )
    assert removed["metadata"]["finalizers"] == ["b"]
    replaced = strategic_merge_patch(
        result,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "new", "image": "n"}, {"$patch": "replace"}]}
                }
            }
        },
        _deployment_schema(),
    )
    assert replaced["spec"]["template"]["spec"]["containers"] == [{"name": "new", "image": "n"}]


def test_merge_patch_rfc7386_examples() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}

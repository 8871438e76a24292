"""The `/scale` subresource: an autoscaling/v1 `Scale` view of a workload's replica count.

Deployments and ReplicaSets keep replicas at `.spec.replicas` and render `status.selector` from
`spec.selector`; a CRD names its own paths (`specReplicasPath`, `statusReplicasPath`,
`labelSelectorPath`). Writing a Scale changes only the replica count of the object behind it,
through the same preconditions, validation and generation bump as any other update.
"""

from __future__ import annotations

from typing import Any

from emulators.kube import errors
from emulators.kube.api import KubeApi
from emulators.kube.objects import clone
from emulators.kube.resources import ResourceKind, ScalePaths
from emulators.kube.schemas import builtin_schema
from emulators.kube.selectors import format_label_selector

JSON = dict[str, Any]


def _get(obj: JSON, path: str) -> Any:
    value: Any = obj
    for key in path.strip(".").split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _set(obj: JSON, path: str, value: Any) -> None:
    keys = path.strip(".").split(".")
    for key in keys[:-1]:
        obj = obj.setdefault(key, {})
    obj[keys[-1]] = value


def _paths(rk: ResourceKind, name: str) -> ScalePaths:
    if rk.scale is None:
        raise errors.not_found(plural=f"{rk.plural}/scale", group=rk.group, name=name)
    return rk.scale


def scale_of(rk: ResourceKind, obj: JSON) -> JSON:
    paths = rk.scale or ScalePaths()
    meta = obj["metadata"]
    if paths.label_selector is None:
        selector = format_label_selector((obj.get("spec") or {}).get("selector"))
    else:
        selector = _get(obj, paths.label_selector) or ""
    status: JSON = {"replicas": _get(obj, paths.status_replicas) or 0}
    if selector:
        status["selector"] = selector
    spec: JSON = {}
    replicas = _get(obj, paths.spec_replicas)
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": spec,
        "status": status,
    }


def get_scale(api: KubeApi, rk: ResourceKind, namespace: str | None, name: str) -> JSON:
    _paths(rk, name)
    with api.store.lock:
        return scale_of(rk, clone(api.existing(rk, namespace, name)))


def replace_scale(
    api: KubeApi,
    rk: ResourceKind,
    version: str,
    namespace: str | None,
    name: str,
    body: Any,
    *,
    dry_run: bool = False,
) -> JSON:
    paths = _paths(rk, name)
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request was not a JSON object")
    body = clone(body)
    body.setdefault("kind", "Scale")
    body.setdefault("apiVersion", "autoscaling/v1")
    meta = body.get("metadata") or {}
    if meta.get("name") != name:
        raise errors.bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on "
            f"the URL ({name})"
        )
    with api.store.lock:
        old = api.existing(rk, namespace, name)
        if meta.get("namespace") is None and rk.namespaced:
            body.setdefault("metadata", {})["namespace"] = namespace
        api.validator.check_builtin("autoscaling", "v1", "Scale", body)
        api.check_preconditions(rk, old, meta)
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                kind="Scale",
                group="autoscaling",
                name=name,
                causes=[
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.replicas",
                        "message": f"Invalid value: {replicas}: must be greater than or equal to 0",
                    }
                ],
            )
        new = clone(old)
        _set(new, paths.spec_replicas, replicas)
        updated = api.commit(rk, version, old, new, dry_run=dry_run)
        return scale_of(rk, updated)


def patch_scale(
    api: KubeApi,
    rk: ResourceKind,
    version: str,
    namespace: str | None,
    name: str,
    patch: Any,
    *,
    content_type: str,
    dry_run: bool = False,
) -> JSON:
    _paths(rk, name)
    with api.store.lock:
        current = scale_of(rk, clone(api.existing(rk, namespace, name)))
        patched = api.apply_patch(
            current,
            patch,
            content_type=content_type,
            strategic_schema=builtin_schema("autoscaling", "v1", "Scale"),
        )
        return replace_scale(api, rk, version, namespace, name, patched, dry_run=dry_run)

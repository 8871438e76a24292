"""What the Deployment-based strategies share: the canary Deployment and the Services in front.

Every Deployment-based strategy runs the new image in `<deployment>-canary`, a clone of the
stable Deployment whose pods carry the stable pod labels with `track: canary` (DESIGN.md, "Pods
and names"), so the clone, the stable container's image and the rollout check live here once.
These are the building blocks; `canary.CanaryWorkload` puts them together, in order, for the
strategies that split in front of the pods.

The bot uses, changes and deletes only objects it created for the rollout at hand: each one
carries the `app.kubernetes.io/managed-by: canary-bot` label and the annotation naming the
rollout, and deletes carry the object's uid as a precondition. A `-canary` object at one of its
names that lacks either (a team's own `checkout-canary`, a leftover of another rollout) is
refused at start and never touched afterwards.

`nginx`, `gateway` and `service` also need a Service that reaches only the canary pods
(`<service>-canary`, selecting `track: canary`), and they depend on the stable Service reaching
only the stable pods: `pinning.py` keeps a Service that selects just `app: checkout` off the
canary pods for as long as they exist.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any

from rollout.kube import MANAGED_BY, KubeGateway
from rollout.model import Rollout

ROLLOUT_ANNOTATION = "canary-bot.io/rollout-id"
TRACK_LABEL = "track"
CANARY_TRACK = "canary"


class RouterError(Exception):
    """The cluster is not in a state the router can work with; the message says why."""


class ForeignObject(RouterError):
    """An object at a name the bot would use was not created by the bot for this rollout."""


# ----------------------------------------------------------------- ownership


def owns(obj: dict[str, Any], rollout: Rollout) -> bool:
    """True if the bot created `obj` for `rollout`: its label and its annotation both say so."""
    metadata = obj.get("metadata", {})
    labelled = all((metadata.get("labels") or {}).get(k) == v for k, v in MANAGED_BY.items())
    return labelled and (metadata.get("annotations") or {}).get(ROLLOUT_ANNOTATION) == rollout.id


def ours(obj: dict[str, Any] | None, rollout: Rollout) -> dict[str, Any] | None:
    """`obj` if the bot created it for `rollout`; None if it is absent or somebody else's."""
    return obj if obj is not None and owns(obj, rollout) else None


def uid_of(obj: dict[str, Any]) -> str | None:
    uid = obj.get("metadata", {}).get("uid")
    return str(uid) if uid else None


def refuse_foreign(obj: dict[str, Any] | None, rollout: Rollout, *, kind: str) -> None:
    """Raises `ForeignObject` if `obj` exists and was not created by the bot for `rollout`."""
    if obj is None or owns(obj, rollout):
        return
    metadata = obj["metadata"]
    where = f"{metadata.get('namespace', rollout.namespace)}/{metadata['name']}"
    created_for = (metadata.get("annotations") or {}).get(ROLLOUT_ANNOTATION)
    whose = (
        f"canary-bot created it for another rollout ({created_for})"
        if created_for and owns(obj, replace(rollout, id=created_for))
        else (
            "canary-bot did not create it (it lacks the label "
            f"{show_labels(MANAGED_BY)} and the annotation {ROLLOUT_ANNOTATION})"
        )
    )
    raise ForeignObject(
        f"{kind} {where} is in the way: {whose}, so the bot will not use, change or delete "
        f"it. Remove or rename it if nothing needs it (kubectl -n "
        f"{metadata.get('namespace', rollout.namespace)} delete {kind.lower()} "
        f"{metadata['name']}), then start again."
    )


def refuse_foreign_canaries(
    kube: KubeGateway,
    rollout: Rollout,
    *,
    service: str | None = None,
    ingress: str | None = None,
) -> None:
    """Checked at start: every `-canary` name the strategy would create is free or ours."""
    namespace = rollout.namespace
    refuse_foreign(
        kube.read_deployment(namespace, canary_name(rollout)), rollout, kind="Deployment"
    )
    if service:
        name = canary_service_name(service)
        refuse_foreign(kube.read_service(namespace, name), rollout, kind="Service")
    if ingress:
        name = f"{ingress}-canary"
        refuse_foreign(kube.read_ingress(namespace, name), rollout, kind="Ingress")


# ----------------------------------------------------------------- the canary Deployment


def canary_name(rollout: Rollout) -> str:
    return f"{rollout.deployment}-canary"


def read_stable(kube: KubeGateway, rollout: Rollout) -> dict[str, Any]:
    stable = kube.read_deployment(rollout.namespace, rollout.deployment)
    if stable is None:
        raise RouterError(f"Deployment {rollout.namespace}/{rollout.deployment} does not exist")
    return stable


def stable_container(stable: dict[str, Any], rollout: Rollout) -> tuple[str, str]:
    """(name, image) of the container being released; `rollout.container` empty = the first."""
    containers = stable["spec"]["template"]["spec"]["containers"]
    if not rollout.container:
        return containers[0]["name"], containers[0]["image"]
    for container in containers:
        if container["name"] == rollout.container:
            return container["name"], container["image"]
    names = ", ".join(c["name"] for c in containers)
    raise RouterError(
        f"Deployment {rollout.namespace}/{rollout.deployment} has no container "
        f"{rollout.container!r} (it has: {names})"
    )


def container_image(deployment: dict[str, Any], container: str) -> str | None:
    for item in deployment["spec"]["template"]["spec"]["containers"]:
        if item["name"] == container:
            return str(item.get("image"))
    return None


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"].get("metadata", {}).get("labels", {}))


def canary_pod_labels(stable: dict[str, Any]) -> dict[str, str]:
    return {**pod_labels(stable), TRACK_LABEL: CANARY_TRACK}


def canary_deployment_body(stable: dict[str, Any], rollout: Rollout) -> dict[str, Any]:
    """A clone of the stable Deployment at zero replicas: same pod labels plus `track: canary`
    (replacing any `track` the stable pods carry), and the canary image."""
    spec = copy.deepcopy(stable["spec"])
    spec["replicas"] = 0
    selector = spec.setdefault("selector", {}).setdefault("matchLabels", {})
    selector[TRACK_LABEL] = CANARY_TRACK
    template = spec["template"]
    template.setdefault("metadata", {}).setdefault("labels", {})[TRACK_LABEL] = CANARY_TRACK
    for container in template["spec"]["containers"]:
        if container["name"] == rollout.container:
            container["image"] = rollout.canary_image
    labels = {**stable["metadata"].get("labels", {}), **MANAGED_BY}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": canary_name(rollout),
            "namespace": rollout.namespace,
            "labels": labels,
            "annotations": {ROLLOUT_ANNOTATION: rollout.id},
        },
        "spec": spec,
    }


def our_canary(kube: KubeGateway, rollout: Rollout) -> dict[str, Any] | None:
    """The canary Deployment, if the bot created it for this rollout."""
    return ours(kube.read_deployment(rollout.namespace, canary_name(rollout)), rollout)


def ensure_canary(kube: KubeGateway, rollout: Rollout, *, stable: dict[str, Any]) -> bool:
    """Creates the canary Deployment unless it exists; True if it had to be created."""
    existing = kube.read_deployment(rollout.namespace, canary_name(rollout))
    if existing is not None:
        refuse_foreign(existing, rollout, kind="Deployment")
        return False
    kube.create_deployment(rollout.namespace, canary_deployment_body(stable, rollout))
    kube.emit_event(
        involved=stable,
        reason="CanaryCreated",
        message=f"canary-bot created {canary_name(rollout)} with {rollout.canary_image}",
    )
    return True


def read_canary(kube: KubeGateway, rollout: Rollout) -> dict[str, Any]:
    canary = our_canary(kube, rollout)
    if canary is None:
        raise RouterError(f"canary Deployment {canary_name(rollout)} is missing")
    return canary


def scale_canary(
    kube: KubeGateway, rollout: Rollout, *, canary: dict[str, Any], count: int
) -> bool:
    """Sets the canary's replica count; True if it had to change."""
    if canary["spec"].get("replicas") == count:
        return False
    kube.scale_deployment(rollout.namespace, canary_name(rollout), count)
    return True


def canary_capacity(total: int, weight: int) -> int:
    """Canary pods for a share of traffic set outside the pods (Ingress, selector): enough
    to carry `weight` percent of what `total` stable pods carry, rounded up, at least one."""
    return max(1, math.ceil(max(total, 1) * min(max(weight, 0), 100) / 100))


def deployment_rolled_out(deployment: dict[str, Any], *, image: str | None = None) -> bool:
    """True when the controller has rolled out the current spec (kubectl's rollout status)."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    metadata = deployment.get("metadata", {})
    replicas = spec.get("replicas", 1)
    if image is not None:
        images = [c.get("image") for c in spec["template"]["spec"]["containers"]]
        if image not in images:
            return False
    return bool(
        status.get("observedGeneration", 0) >= metadata.get("generation", 1)
        and status.get("updatedReplicas", 0) == replicas
        and status.get("readyReplicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
    )


def set_stable_image(
    kube: KubeGateway, rollout: Rollout, *, stable: dict[str, Any], image: str
) -> bool:
    """Sets the released container of the stable Deployment to `image`; True if it changed."""
    container, _ = stable_container(stable, rollout)
    if container_image(stable, container) == image:
        return False
    kube.patch_deployment(
        rollout.namespace,
        rollout.deployment,
        {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}},
    )
    return True


def delete_canary(kube: KubeGateway, rollout: Rollout) -> bool:
    """Deletes the canary Deployment the bot created; True if it was there."""
    canary = our_canary(kube, rollout)
    if canary is None:
        return False
    kube.delete_deployment(rollout.namespace, canary_name(rollout), uid=uid_of(canary))
    return True


# ----------------------------------------------------------------- Services


def canary_service_name(service: str) -> str:
    return f"{service}-canary"


def target_service(rollout: Rollout) -> str:
    if not rollout.target.service:
        raise RouterError(
            f"strategy {rollout.strategy} needs `service:` (the Service in front of "
            f"{rollout.deployment}) in the config of {rollout.service}"
        )
    return rollout.target.service


def read_service(kube: KubeGateway, rollout: Rollout, *, name: str) -> dict[str, Any]:
    service = kube.read_service(rollout.namespace, name)
    if service is None:
        raise RouterError(f"Service {rollout.namespace}/{name} does not exist")
    return service


def selector_of(service: dict[str, Any]) -> dict[str, str]:
    return dict(service.get("spec", {}).get("selector") or {})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A Service's equality selector against pod labels (an empty selector selects nothing)."""
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def show_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or "(none)"


def check_selects_stable(service: dict[str, Any], stable: dict[str, Any]) -> None:
    """Refuses a Service that does not select the stable pods."""
    where = f"{service['metadata']['namespace']}/{service['metadata']['name']}"
    selector = selector_of(service)
    if not selects(selector, pod_labels(stable)):
        raise RouterError(
            f"Service {where} (selector {show_labels(selector)}) does not select the pods of "
            f"Deployment {stable['metadata']['name']} ({show_labels(pod_labels(stable))})"
        )


def canary_selector(selector: dict[str, str]) -> dict[str, str]:
    return {**selector, TRACK_LABEL: CANARY_TRACK}


def canary_service_body(service: dict[str, Any], rollout: Rollout) -> dict[str, Any]:
    """`<service>-canary`: the stable Service's ports, selecting only the canary pods.

    Always a ClusterIP Service: node ports and load balancers belong to the stable Service,
    and copying them would collide with it."""
    ports = []
    for port in service["spec"].get("ports", []):
        ports.append({k: v for k, v in port.items() if k != "nodePort"})
    name = canary_service_name(service["metadata"]["name"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": rollout.namespace,
            "labels": {**service["metadata"].get("labels", {}), **MANAGED_BY},
            "annotations": {ROLLOUT_ANNOTATION: rollout.id},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": canary_selector(selector_of(service)),
            "ports": ports,
        },
    }


def ensure_canary_service(kube: KubeGateway, rollout: Rollout, *, service: dict[str, Any]) -> bool:
    name = canary_service_name(service["metadata"]["name"])
    existing = kube.read_service(rollout.namespace, name)
    if existing is not None:
        refuse_foreign(existing, rollout, kind="Service")
        return False
    kube.create_service(rollout.namespace, canary_service_body(service, rollout))
    return True


def delete_canary_service(kube: KubeGateway, rollout: Rollout, *, service: str) -> bool:
    name = canary_service_name(service)
    existing = ours(kube.read_service(rollout.namespace, name), rollout)
    if existing is None:
        return False
    kube.delete_service(rollout.namespace, name, uid=uid_of(existing))
    return True


def selector_patch(current: dict[str, str], wanted: dict[str, str]) -> dict[str, Any]:
    """A strategic-merge patch that leaves a Service's selector exactly `wanted`."""
    removed: dict[str, str | None] = {key: None for key in current if key not in wanted}
    return {"spec": {"selector": {**removed, **wanted}}}

"""Keeping a team's stable Service (or Istio subset) off the canary pods without relabelling.

Most Services select only what the Deployment's pods carry (`app: checkout`), and the canary
pods carry that too. While a canary exists the bot pins such a selector to the stable
ReplicaSet's `pod-template-hash`, which canary pods never carry, the way Argo Rollouts does; the
hash is read afresh each time, so the pin follows stable when promotion gives it a new
ReplicaSet. The selector the Service had before is kept in the rollout's `router_state` and put
back once no canary pod is left. A selector on a label the canary pods do not share
(`track: stable`) needs no pin and is left alone.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from rollout.kube import KubeGateway
from rollout.model import Rollout
from rollout.traffic.workloads import (
    RouterError,
    canary_pod_labels,
    selector_of,
    selector_patch,
    selects,
    show_labels,
)

# The label the Deployment controller puts on a ReplicaSet and its pods: a hash of the template.
POD_TEMPLATE_HASH = "pod-template-hash"
# router_state key: {Service name: its selector before the rollout}, for Services the bot pinned.
PINNED_SERVICES = "pinned_services"


def needs_pin(selector: dict[str, str], stable: dict[str, Any]) -> bool:
    """True if `selector` would also select the canary's pods (stable labels + track: canary)."""
    return selects(selector, canary_pod_labels(stable))


def current_template_hash(kube: KubeGateway, stable: dict[str, Any]) -> str:
    """The `pod-template-hash` of the stable Deployment's current ReplicaSet.

    As the Deployment controller finds it: among the ReplicaSets the Deployment controls, the
    one whose pod template is the Deployment's own (apart from the hash label)."""
    metadata = stable["metadata"]
    selector = (stable["spec"].get("selector") or {}).get("matchLabels") or {}
    template = _without_hash(stable["spec"]["template"])
    for replica_set in kube.list_replica_sets(metadata["namespace"], selector=selector):
        owners = replica_set["metadata"].get("ownerReferences") or []
        controlled = any(
            o.get("uid") == metadata.get("uid") and o.get("controller") for o in owners
        )
        pin = (replica_set["metadata"].get("labels") or {}).get(POD_TEMPLATE_HASH)
        if controlled and pin and _without_hash(replica_set["spec"]["template"]) == template:
            return str(pin)
    raise RouterError(
        f"Deployment {metadata['namespace']}/{metadata['name']} has no ReplicaSet for its "
        f"current pod template yet; wait until `kubectl -n {metadata['namespace']} rollout "
        f"status deployment/{metadata['name']}` completes, then try again"
    )


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    trimmed = copy.deepcopy(template)
    labels = trimmed.get("metadata", {}).get("labels") or {}
    labels.pop(POD_TEMPLATE_HASH, None)
    return trimmed


def stable_only(
    kube: KubeGateway, selector: dict[str, str], *, stable: dict[str, Any]
) -> dict[str, str]:
    """`selector`, pinned to the stable ReplicaSet when the canary's pods would match it."""
    if not needs_pin(selector, stable):
        return selector
    return {**selector, POD_TEMPLATE_HASH: current_template_hash(kube, stable)}


def remember_selector(rollout: Rollout, service: dict[str, Any]) -> Rollout:
    """Records the Service's selector before the bot pins it (first time only)."""
    pinned = dict(rollout.router_state.get(PINNED_SERVICES) or {})
    name = service["metadata"]["name"]
    if name in pinned:
        return rollout
    pinned[name] = selector_of(service)
    return replace(rollout, router_state={**rollout.router_state, PINNED_SERVICES: pinned})


def original_selector(rollout: Rollout, service: dict[str, Any]) -> dict[str, str]:
    """The Service's selector before the rollout (its current one if the bot never pinned it)."""
    pinned = rollout.router_state.get(PINNED_SERVICES) or {}
    return dict(pinned.get(service["metadata"]["name"]) or selector_of(service))


def set_selector(
    kube: KubeGateway, rollout: Rollout, service: dict[str, Any], wanted: dict[str, str]
) -> bool:
    """Leaves the Service's selector exactly `wanted`; True if it had to change."""
    current = selector_of(service)
    if current == wanted:
        return False
    name = service["metadata"]["name"]
    kube.patch_service(rollout.namespace, name, selector_patch(current, wanted))
    kube.emit_event(
        involved=service,
        reason="SelectorPinned" if POD_TEMPLATE_HASH in wanted else "SelectorRestored",
        message=f"canary-bot set the selector to {show_labels(wanted)} ({rollout.id})",
    )
    return True


def pin_stable_service(
    kube: KubeGateway, rollout: Rollout, *, service: dict[str, Any], stable: dict[str, Any]
) -> bool:
    """Keeps the stable Service off the canary pods: pinned to the stable ReplicaSet when its
    own selector would reach them (re-pinned after stable changes ReplicaSet); True if it had
    to change."""
    original = original_selector(rollout, service)
    return set_selector(kube, rollout, service, stable_only(kube, original, stable=stable))


def unpin_stable_service(kube: KubeGateway, rollout: Rollout, *, name: str) -> bool:
    """Puts back the selector the Service had before the rollout; True if it had to change."""
    pinned = rollout.router_state.get(PINNED_SERVICES) or {}
    if name not in pinned:
        return False
    service = kube.read_service(rollout.namespace, name)
    if service is None:
        return False
    return set_selector(kube, rollout, service, dict(pinned[name]))

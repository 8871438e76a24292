"""Where the synthetic traffic exporter learns the canary's share: the emulated cluster.

With the `replicas` strategy a Service spreads requests over every ready pod it selects, stable
and canary alike, so the share of traffic the canary really gets is its share of ready pods,
whatever weight the bot meant to set. Reading that share from the Kubernetes emulator makes
the traffic that Prometheus sees in tests (and in the demo) follow the bot's own actions: a
step raises the canary's requests once its pods are ready, and a rollback stops them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from emulators.kube import KubeEmulator
from rollout.traffic.replicas import canary_weight


def canary_weight_from_cluster(
    kube: KubeEmulator, *, deployments: Mapping[str, str] | None = None
) -> Callable[[str, str], float]:
    """`weight_of(namespace, service)` for `TrafficExporter`, in percent (0 without a canary).

    `deployments` maps a service to its stable Deployment; a service not in it runs the
    Deployment of the same name (as in the sandbox: service `checkout`, Deployment
    `checkout`). The canary Deployment is `<deployment>-canary`.
    """
    names = dict(deployments or {})

    def weight_of(namespace: str, service: str) -> float:
        deployment = names.get(service, service)
        canary = _ready(kube.get("apps/v1", "Deployment", namespace, f"{deployment}-canary"))
        stable = _ready(kube.get("apps/v1", "Deployment", namespace, deployment))
        return canary_weight(canary, stable)

    return weight_of


def _ready(deployment: dict[str, Any] | None) -> int:
    if deployment is None:
        return 0
    return int((deployment.get("status") or {}).get("readyReplicas", 0) or 0)

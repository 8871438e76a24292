"""Every traffic strategy in one table: its router, its metrics and what it can do.

After Flagger's router factory: a strategy name picks one entry, and everything that differs
by strategy is read from that entry instead of from tables kept by each reader. Config
validation reads the names, the keys each strategy needs and whether `route` applies; the
engine reads the capabilities (header and cookie routing, single step); the runtime builds
the routers; the analysis picks its query family by `flavour`. Adding a strategy is one
router module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from rollout.kube import KubeGateway
from rollout.traffic.alb import AlbRouter
from rollout.traffic.argo import ArgoRouter
from rollout.traffic.base import TrafficRouter
from rollout.traffic.gateway import GatewayRouter
from rollout.traffic.istio import IstioRouter
from rollout.traffic.nginx import NginxRouter
from rollout.traffic.replicas import ReplicasRouter
from rollout.traffic.service import ServiceRouter

# Which built-in query family measures a strategy's traffic (rollout/analysis/queries.py):
# the app's own metrics, or those of the proxy that splits the traffic.
Flavour = Literal["generic", "istio", "nginx"]

# Config keys that name objects, with what each names (for the message when one is missing).
SERVICE_KEY = ("service", "the Service in front of the pods")


@dataclass(frozen=True, kw_only=True)
class Strategy:
    name: str
    router: Callable[[KubeGateway], TrafficRouter]
    flavour: Flavour = "generic"
    # `/canary start --header name=value` / `--cookie NAME`: requests sent to the canary
    # whatever the weight.
    header_routing: bool = False
    cookie_routing: bool = False
    # All traffic moves at once after approval; the only step is a preview (blue/green).
    single_step: bool = False
    # The strategy splits one route of an object with several, which `route:` may name.
    splits_route: bool = False
    # Config keys the strategy cannot work without, each with what it names.
    needs: tuple[tuple[str, str], ...] = ()


STRATEGIES: Mapping[str, Strategy] = {
    entry.name: entry
    for entry in (
        Strategy(name="replicas", router=ReplicasRouter),
        Strategy(name="service", router=ServiceRouter, single_step=True),
        Strategy(
            name="nginx",
            router=NginxRouter,
            flavour="nginx",
            header_routing=True,
            cookie_routing=True,
            needs=(("ingress", "the Ingress whose traffic is split"), SERVICE_KEY),
        ),
        Strategy(
            name="alb",
            router=AlbRouter,
            needs=(("ingress", "the Ingress whose ALB action is weighted"), SERVICE_KEY),
        ),
        Strategy(
            name="istio",
            router=IstioRouter,
            flavour="istio",
            header_routing=True,
            splits_route=True,
            needs=(
                ("virtual_service", "the VirtualService whose routes are weighted"),
                SERVICE_KEY,
            ),
        ),
        Strategy(
            name="gateway",
            router=GatewayRouter,
            splits_route=True,
            needs=(("http_route", "the HTTPRoute whose backendRefs are weighted"), SERVICE_KEY),
        ),
        Strategy(
            name="argo",
            router=ArgoRouter,
            needs=(("argo_rollout", "the Argo Rollout that is driven"),),
        ),
    )
}


class UnknownStrategy(ValueError):
    """A strategy name with no entry; the message lists the ones there are."""


def strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategy(f"must be one of {', '.join(STRATEGIES)} (got {name!r})") from None


def names_with(capability: Callable[[Strategy], bool]) -> tuple[str, ...]:
    """The strategies that have a capability, for messages ("nginx or istio")."""
    return tuple(name for name, entry in STRATEGIES.items() if capability(entry))


def listed(names: tuple[str, ...], *, last: str = "or") -> str:
    """`a`, `a or b`, `a, b or c`."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {last} {names[-1]}"

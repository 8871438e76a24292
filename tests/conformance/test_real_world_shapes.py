"""Routing objects as teams write them, after the public examples: only the route that carries
the service's traffic changes, every other field stays as it was throughout, and the object is
put back deep-equal (apart from fields the API server manages) after rollback and promotion.

Shapes:
- a VirtualService like Istio's bookinfo `reviews` and `productpage` samples: a header-matched
  route for testers, a default route with `retries`, `timeout`, `mirror` and `fault`, and a
  route to another host;
- an HTTPRoute like the Gateway API's traffic-splitting and filter examples: two `parentRefs`
  (a listener by section name), named rules with header and path `matches`, a
  `RequestHeaderModifier` and a `ResponseHeaderModifier`, and a rule to another Service;
- an Ingress like ingress-nginx's canary documentation: TLS for two hosts, several paths per
  host, paths to other Services, and annotations of its own (rewrite, body size, SSL redirect);
- an Ingress like the AWS Load Balancer Controller's examples (`alb`): its own annotations and a
  redirect action of its own, TLS, paths to other Services.

The pods carry only `app: checkout` and the Service selects just that, as in those examples.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from emulators.kube import BUNDLED_CRDS, KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import Rollout, TrafficTarget
from rollout.traffic.alb import AlbRouter
from rollout.traffic.base import TrafficRouter
from rollout.traffic.gateway import HTTP_ROUTE, GatewayRouter
from rollout.traffic.istio import VIRTUAL_SERVICE, IstioRouter
from rollout.traffic.nginx import NginxRouter
from rollout.traffic.workloads import RouterError, deployment_rolled_out
from tests.conformance.cases import alb as alb_case
from tests.conformance.cases import replicas as replicas_case
from tests.conformance.cases.base import NAMESPACE, rollout_for, stable_deployment

SERVER_MANAGED = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": NAMESPACE, "labels": {"app": "checkout"}},
        "spec": {
            "selector": {"app": "checkout"},
            "ports": [{"name": "http", "port": 9080, "targetPort": 9080}],
        },
    }


def virtual_service() -> dict[str, Any]:
    return {
        "apiVersion": VIRTUAL_SERVICE.api_version,
        "kind": VIRTUAL_SERVICE.kind,
        "metadata": {"name": "checkout", "namespace": NAMESPACE, "labels": {"team": "shop"}},
        "spec": {
            "hosts": ["checkout", "shop.example.com"],
            "gateways": ["mesh", "shop-gateway"],
            "http": [
                {
                    "name": "testers",
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "checkout", "port": {"number": 9080}}}],
                },
                {
                    "name": "primary",
                    "match": [{"uri": {"prefix": "/"}}],
                    "route": [{"destination": {"host": "checkout.shop.svc.cluster.local"}}],
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,reset"},
                    "timeout": "10s",
                    "mirror": {"host": "checkout-shadow"},
                    "mirrorPercentage": {"value": 5.0},
                    "fault": {"delay": {"percentage": {"value": 0.1}, "fixedDelay": "5s"}},
                    "headers": {"response": {"set": {"x-served-by": "mesh"}}},
                },
                {"name": "ratings", "route": [{"destination": {"host": "ratings"}}]},
            ],
        },
    }


def http_route() -> dict[str, Any]:
    return {
        "apiVersion": HTTP_ROUTE.api_version,
        "kind": HTTP_ROUTE.kind,
        "metadata": {"name": "checkout", "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [
                {"name": "shop-gateway", "sectionName": "https"},
                {"name": "internal-gateway", "namespace": "infra"},
            ],
            "hostnames": ["shop.example.com", "checkout.internal"],
            "rules": [
                {
                    "name": "beta-testers",
                    "matches": [
                        {
                            "headers": [{"name": "x-beta", "value": "true"}],
                            "path": {"type": "PathPrefix", "value": "/cart"},
                        }
                    ],
                    "backendRefs": [{"name": "checkout", "port": 9080}],
                },
                {
                    "name": "main",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {
                                "add": [{"name": "x-route", "value": "main"}],
                                "remove": ["x-debug"],
                            },
                        },
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {"set": [{"name": "x-shop", "value": "1"}]},
                        },
                    ],
                    "backendRefs": [{"name": "checkout", "port": 9080}],
                },
                {
                    "name": "payments",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/pay"}}],
                    "backendRefs": [{"name": "payments", "port": 8080}],
                },
            ],
        },
    }


def ingress() -> dict[str, Any]:
    def path(prefix: str, name: str, port: str = "http") -> dict[str, Any]:
        backend = {"service": {"name": name, "port": {"name": port}}}
        return {"path": prefix, "pathType": "Prefix", "backend": backend}

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "shop",
            "namespace": NAMESPACE,
            "labels": {"app": "shop"},
            "annotations": {
                "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
                "nginx.ingress.kubernetes.io/ssl-redirect": "true",
                "nginx.ingress.kubernetes.io/use-regex": "true",
            },
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [
                {"hosts": ["shop.example.com"], "secretName": "shop-tls"},
                {"hosts": ["www.shop.example.com"], "secretName": "www-tls"},
            ],
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            path("/checkout", "checkout"),
                            path("/cart", "checkout"),
                            path("/static", "assets"),
                        ]
                    },
                },
                {
                    "host": "www.shop.example.com",
                    "http": {"paths": [path("/", "storefront"), path("/checkout", "checkout")]},
                },
            ],
        },
    }


def as_it_was(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    metadata = {k: v for k, v in obj["metadata"].items() if k not in SERVER_MANAGED}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": metadata}


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator(crd_dir=BUNDLED_CRDS, ready_delay=0.02) as emulator:
        for obj in (stable_deployment(), service()):
            emulator.seed(obj)
        yield emulator


def prepared(
    kube: KubeEmulator, router: TrafficRouter, strategy: str, target: TrafficTarget
) -> Rollout:
    rollout = replace(rollout_for(replicas_case.CASE), strategy=strategy, target=target)
    router.stable_image(rollout)  # the start checks
    return router.prepare(rollout)


def finish(step: Any, *, limit: int = 1000) -> None:
    """Calls `step` as the engine's ticks would until it reports done; the emulated controller
    rolls pods out on its own thread meanwhile."""
    for _ in range(limit):
        if step():
            return
        time.sleep(0.02)
    raise AssertionError("the promotion did not finish")


CASES = {
    "istio": (
        virtual_service,
        VIRTUAL_SERVICE.api_version,
        VIRTUAL_SERVICE.kind,
        "checkout",
        lambda g: IstioRouter(g),
        TrafficTarget(service="checkout", virtual_service="checkout", route="primary"),
    ),
    "gateway": (
        http_route,
        HTTP_ROUTE.api_version,
        HTTP_ROUTE.kind,
        "checkout",
        lambda g: GatewayRouter(g),
        TrafficTarget(service="checkout", http_route="checkout", route="main"),
    ),
    "nginx": (
        ingress,
        "networking.k8s.io/v1",
        "Ingress",
        "shop",
        lambda g: NginxRouter(g),
        TrafficTarget(service="checkout", ingress="shop"),
    ),
    "alb": (
        alb_case.stable_ingress,
        "networking.k8s.io/v1",
        "Ingress",
        "shop",
        lambda g: AlbRouter(g),
        TrafficTarget(service="checkout", ingress="shop"),
    ),
}


def changed_entries(strategy: str, before: dict[str, Any], during: dict[str, Any]) -> list[str]:
    """Names of the routes (or rules) that differ from before; everything else must not."""
    if strategy == "nginx":
        return [] if before == during else ["the stable Ingress"]
    if strategy == "alb":
        assert {k: v for k, v in during["spec"].items() if k != "rules"} == {
            k: v for k, v in before["spec"].items() if k != "rules"
        }
        annotations = dict(during["metadata"]["annotations"])
        assert alb_case.ACTION in annotations
        del annotations[alb_case.ACTION]
        assert {**during["metadata"], "annotations": annotations} == before["metadata"]
        old = [p for r in before["spec"]["rules"] for p in r["http"]["paths"]]
        new = [p for r in during["spec"]["rules"] for p in r["http"]["paths"]]
        return [b["path"] for a, b in zip(old, new, strict=True) if a != b]
    key = "http" if strategy == "istio" else "rules"
    others = {k: v for k, v in during["spec"].items() if k != key}
    assert others == {k: v for k, v in before["spec"].items() if k != key}
    assert during["metadata"] == before["metadata"]
    old = {e["name"]: e for e in before["spec"][key]}
    return [e["name"] for e in during["spec"][key] if old.get(e["name"]) != e]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", sorted(CASES))
@pytest.mark.parametrize("ending", ["rollback", "promotion"])
def test_only_the_service_route_changes_and_everything_comes_back(
    kube: KubeEmulator, strategy: str, ending: str
) -> None:
    build, api_version, kind, name, make_router, target = CASES[strategy]
    kube.seed(build())
    before = as_it_was(kube.get(api_version, kind, NAMESPACE, name))
    service_before = as_it_was(kube.get("v1", "Service", NAMESPACE, "checkout"))
    assert before is not None
    router = make_router(KubeGateway(kube.api_client()))
    rollout = prepared(kube, router, strategy, target)

    router.set_weight(rollout, 20)
    during = as_it_was(kube.get(api_version, kind, NAMESPACE, name))
    assert during is not None
    expected = {
        "istio": ["primary"],
        "gateway": ["main"],
        "nginx": [],
        "alb": ["/checkout", "/cart"],
    }[strategy]
    assert changed_entries(strategy, before, during) == expected
    if strategy == "istio":
        primary = next(r for r in during["spec"]["http"] if r["name"] == "primary")
        original = virtual_service()["spec"]["http"][1]
        assert {k: v for k, v in primary.items() if k != "route"} == {
            k: v for k, v in original.items() if k != "route"
        }
    if strategy == "gateway":
        main = next(r for r in during["spec"]["rules"] if r["name"] == "main")
        assert main["filters"] == http_route()["spec"]["rules"][1]["filters"]
        assert main["matches"] == http_route()["spec"]["rules"][1]["matches"]
    if strategy == "nginx":
        canary = kube.get(api_version, kind, NAMESPACE, "shop-canary")
        assert canary is not None
        served = {
            (rule["host"], p["path"])
            for rule in canary["spec"]["rules"]
            for p in rule["http"]["paths"]
        }
        assert served == {
            ("shop.example.com", "/checkout"),
            ("shop.example.com", "/cart"),
            ("www.shop.example.com", "/checkout"),
        }

    if ending == "rollback":
        router.rollback(rollout)
    else:
        finish(lambda: router.promote(rollout))
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        assert stable is not None and deployment_rolled_out(stable, image=rollout.canary_image)
    assert as_it_was(kube.get(api_version, kind, NAMESPACE, name)) == before
    assert as_it_was(kube.get("v1", "Service", NAMESPACE, "checkout")) == service_before


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy", ["istio", "gateway"])
def test_several_routes_to_the_service_without_route_are_refused_with_the_candidates(
    kube: KubeEmulator, strategy: str
) -> None:
    build, api_version, kind, name, make_router, target = CASES[strategy]
    kube.seed(build())
    before = copy.deepcopy(kube.get(api_version, kind, NAMESPACE, name))
    router = make_router(KubeGateway(kube.api_client()))
    candidates = "testers, primary" if strategy == "istio" else "beta-testers, main"
    refused = rf"2 .* send traffic to Service checkout \({candidates}\)"
    with pytest.raises(RouterError, match=refused):
        prepared(kube, router, strategy, replace(target, route=None))
    with pytest.raises(RouterError, match=r"has no .* 'nope'"):
        prepared(kube, router, strategy, replace(target, route="nope"))
    other = "ratings" if strategy == "istio" else "payments"
    with pytest.raises(RouterError, match="does not send traffic to Service checkout"):
        prepared(kube, router, strategy, replace(target, route=other))
    assert kube.get(api_version, kind, NAMESPACE, name) == before
    assert kube.get("apps/v1", "Deployment", NAMESPACE, "checkout-canary") is None

"""The strategy registry is the one table every reader uses, and conflicts reach routers as the
gateway's own error.

Config validation, the loader's "needs" check, the runtime's routers, the analysis flavour and
the engine's start checks each read the registry entry, so what an entry says is what the bot
does: checked here for every entry, including any added later.
"""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from bot.config_loader import ConfigError, load_config_text
from bot.runtime import build_routers
from emulators.kube import BUNDLED_CRDS, KubeEmulator
from rollout.analysis import flavour_of
from rollout.config import ServiceConfig
from rollout.kube import KubeConflict, KubeGateway
from rollout.traffic.argo import ROLLOUT
from rollout.traffic.registry import STRATEGIES, Strategy

ENTRIES = list(STRATEGIES.values())


def config_text(entry: Strategy, *, named: bool = True, route: bool = False) -> str:
    keys = "".join(f"    {key}: cart\n" for key, _ in entry.needs) if named else ""
    return (
        textwrap.dedent(
            """\
        slack:
          release_channels: [C0RELEASE]
        cluster_name: test
        defaults:
          rules: []
        services:
          cart:
            namespace: shop
            deployment: cart
        """
        )
        + f"    strategy: {entry.name}\n{keys}"
        + ("    route: main\n" if route else "")
    )


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_config_accepts_each_strategy_and_demands_exactly_its_keys(entry: Strategy) -> None:
    config = load_config_text(config_text(entry))
    assert config.services["cart"].strategy == entry.name
    if entry.needs:
        with pytest.raises(ConfigError) as caught:
            load_config_text(config_text(entry, named=False))
        messages = sorted(p.message for p in caught.value.problems)
        assert messages == sorted(
            f"strategy {entry.name} needs {key}: {what}" for key, what in entry.needs
        )


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_route_is_accepted_exactly_where_the_entry_splits_a_route(entry: Strategy) -> None:
    fields = {"namespace": "shop", "deployment": "cart", "strategy": entry.name, "route": "main"}
    if entry.splits_route:
        assert ServiceConfig.model_validate(fields).route == "main"
    else:
        with pytest.raises(ValidationError, match="splits no route"):
            ServiceConfig.model_validate(fields)


def test_an_unknown_strategy_lists_the_registry() -> None:
    with pytest.raises(ValidationError) as caught:
        ServiceConfig.model_validate(
            {"namespace": "shop", "deployment": "cart", "strategy": "linkerd"}
        )
    assert f"must be one of {', '.join(STRATEGIES)} (got 'linkerd')" in str(caught.value)


def test_the_runtime_builds_each_entry_router_and_analysis_uses_its_flavour() -> None:
    texts = [config_text(entry) for entry in ENTRIES]
    with KubeEmulator() as kube:
        gateway = KubeGateway(kube.api_client())
        for entry, text in zip(ENTRIES, texts, strict=True):
            routers = build_routers(load_config_text(text), gateway)
            assert set(routers) == {entry.name}
            assert type(routers[entry.name]) is entry.router
            assert flavour_of(entry.name) == entry.flavour


def test_a_conflict_reaches_the_caller_as_kube_conflict() -> None:
    with KubeEmulator(crd_dir=BUNDLED_CRDS) as kube:
        kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        body = {
            "apiVersion": ROLLOUT.api_version,
            "kind": ROLLOUT.kind,
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"replicas": 1},
        }
        kube.seed(body)
        gateway = KubeGateway(kube.api_client())
        stale = gateway.read_custom(ROLLOUT, "shop", "cart")
        assert stale is not None
        gateway.patch_custom(ROLLOUT, "shop", "cart", {"spec": {"replicas": 2}})
        patch = {
            "metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
            "spec": {"replicas": 3},
        }
        with pytest.raises(KubeConflict, match="Rollout shop/cart"):
            gateway.patch_custom(ROLLOUT, "shop", "cart", patch)
        current = gateway.read_custom(ROLLOUT, "shop", "cart")
        assert current is not None and current["spec"]["replicas"] == 2

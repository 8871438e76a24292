"""A beat reads the cluster once per namespace and kind, however many rollouts it ticks.

The engine (real routers, the real kubernetes client, the cluster emulator) ticks 4 and then 40
rollouts spread over two namespaces, half with strategy `replicas` and half with `nginx` on
Services that select only `app: <name>` (so the stable Service is pinned to the stable
ReplicaSet, which the step change re-reads). The emulator counts every request by method and
path: the reads of a steady beat, and of a beat in which every rollout changes step, are the
same requests for 40 rollouts as for 4: LISTs of collections, no GET of one object.

A write computed from a beat's copy carries that copy's `resourceVersion`; when the object
changed since the LIST, the write is refused (409) and made again from a read by name, so the
other writer's change is kept.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.config_loader import load_config_text
from bot.runtime import build_routers
from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, STABLE_IMAGE, stable_deployment
from emulators.kube import KubeEmulator
from emulators.kube.resources import BUNDLED_CRDS
from rollout.engine import Engine, StartRequest
from rollout.kube import KubeGateway
from rollout.kube_reads import BeatReads, observing
from rollout.model import Phase
from rollout.store import SqliteStore
from rollout.traffic.istio import VIRTUAL_SERVICE
from tests.conformance.cases.istio import virtual_service
from tests.fakes import FakeClock
from tests.scenario.test_rollout_flow import wait_until

NAMESPACES = ("shop", "cart")
NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")
STEP_SECONDS = 60


def layout(count: int) -> list[tuple[str, str, str]]:
    """(service, namespace, strategy): both namespaces get both strategies."""
    return [
        (f"svc-{i:02d}", NAMESPACES[i % 2], ("replicas", "nginx")[(i // 2) % 2])
        for i in range(count)
    ]


def config_text(services: list[tuple[str, str, str]]) -> str:
    head = textwrap.dedent(
        f"""\
        slack:
          release_channels: [{RELEASE_CHANNEL}]
          oncall: S0ONCALL
          deployers: [{BOB}]
        defaults:
          steps: [25, 50]
          step_interval: {STEP_SECONDS}s
          analysis_interval: 1s
          progress_deadline: 10m
          rules: []
        services:
        """
    )
    body = ""
    for name, namespace, strategy in services:
        body += f"  {name}:\n    namespace: {namespace}\n    deployment: {name}\n"
        body += f"    container: app\n    strategy: {strategy}\n"
        if strategy == "nginx":
            body += f"    service: {name}\n    ingress: {name}\n"
    return head + body


def objects(name: str, namespace: str, strategy: str) -> list[dict[str, Any]]:
    """The stable Deployment (pods labelled `app` only), and for nginx its Service and Ingress."""
    found: list[dict[str, Any]] = [stable_deployment(name, namespace=namespace, replicas=4)]
    if strategy == "nginx":
        port = {"name": "http", "port": 80, "targetPort": 8080}
        found.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"selector": {"app": name}, "ports": [port]},
            }
        )
        backend = {"service": {"name": name, "port": {"name": "http"}}}
        rule = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
        found.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ingressClassName": "nginx", "rules": [{**rule, "host": f"{name}.x"}]},
            }
        )
    return found


@contextmanager
def engine_over(tmp_path: Path, count: int) -> Iterator[tuple[KubeEmulator, Engine, FakeClock]]:
    services = layout(count)
    with KubeEmulator(ready_delay=0.0) as kube:
        for namespace in NAMESPACES:
            kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for service in services:
            for obj in objects(*service):
                kube.seed(obj)
        config = load_config_text(config_text(services))
        gateway = KubeGateway(kube.api_client())
        clock = FakeClock()
        engine = Engine(
            config=config,
            store=SqliteStore(tmp_path / f"canary-{count}.db"),
            routers=build_routers(config, gateway),
            clock=clock,
        )
        try:
            for name, _, _ in services:
                engine.start(StartRequest(service=name, image=NEW_IMAGE, by=BOB, channel=""))
            yield kube, engine, clock
        finally:
            engine.close()


def beat(engine: Engine, clock: FakeClock, *, seconds: float = 1.0) -> None:
    clock.advance(seconds)
    engine.tick_all(wait_for_ticks=True)


def settle(engine: Engine, clock: FakeClock, *, step: int) -> None:
    """Beats until every rollout stands at `step` with its canary pods ready."""

    def settled() -> bool:
        beat(engine, clock)
        active = engine.store.active()
        return all(r.step_index == step and r.step_ready for r in active)

    wait_until(settled, what=f"every rollout ready at step {step}")


def reads_of_one_beat(kube: KubeEmulator, engine: Engine, clock: FakeClock, **kw: float) -> Any:
    kube.clear_requests()
    beat(engine, clock, **kw)
    return Counter({key: n for key, n in kube.requests().items() if key[0] == "GET"})


def measured(tmp_path: Path, count: int) -> tuple[Counter[Any], Counter[Any], int]:
    """(reads of a steady beat, reads of the beat that changes step, rollouts at step 1)."""
    with engine_over(tmp_path, count) as (kube, engine, clock):
        settle(engine, clock, step=0)
        steady = reads_of_one_beat(kube, engine, clock)
        stepping = reads_of_one_beat(kube, engine, clock, seconds=STEP_SECONDS)
        settle(engine, clock, step=1)
        moved = [r for r in engine.store.active() if r.phase == Phase.PROGRESSING]
        return steady, stepping, len(moved)


@pytest.mark.timeout(180)
def test_a_beat_reads_each_namespace_and_kind_once_whatever_the_number_of_rollouts(
    tmp_path: Path,
) -> None:
    few_steady, few_stepping, few_moved = measured(tmp_path, 4)
    many_steady, many_stepping, many_moved = measured(tmp_path, 40)

    assert (few_moved, many_moved) == (4, 40)  # every rollout did change step
    # The same requests, each once, for 4 rollouts as for 40: no read per rollout.
    assert many_steady == few_steady
    assert many_stepping == few_stepping
    assert set(many_steady.values()) == {1}
    for _, path in many_steady + many_stepping:
        assert path.rsplit("/", 1)[-1] in ("deployments", "ingresses", "services", "replicasets")
    collections = {path.rsplit("/", 1)[-1] for _, path in many_stepping}
    # The step change re-pins the nginx Services: the Services and ReplicaSets came from a LIST.
    assert {"deployments", "ingresses", "services", "replicasets"} <= collections


@pytest.mark.timeout(60)
def test_a_write_from_a_beats_copy_that_conflicts_is_made_again_from_a_fresh_read() -> None:
    with KubeEmulator(crd_dir=BUNDLED_CRDS) as kube:
        kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        kube.seed(virtual_service())
        gateway = KubeGateway(kube.api_client())
        with observing(BeatReads()):
            listed = gateway.read_custom(VIRTUAL_SERVICE, "shop", "checkout")
            assert listed is not None
            # Someone else changes the object after the beat's LIST (not through the bot).
            rk, version = kube.registry.by_kind(VIRTUAL_SERVICE.api_version, "VirtualService")  # type: ignore[misc]
            theirs = {**listed, "metadata": {**listed["metadata"], "labels": {"team": "pay"}}}
            kube.api.replace(rk, version, "shop", "checkout", theirs)
            wanted = {**listed["spec"], "hosts": ["checkout.example.org"]}
            kube.clear_writes()
            kube.clear_requests()
            assert gateway.set_custom_spec(VIRTUAL_SERVICE, "shop", "checkout", wanted)

        # The beat's copy is refused (the call's own retries repeat it), then the object is
        # read by name and written once more.
        statuses = [w.status for w in kube.writes if w.method == "PUT"]
        assert statuses[-1] == 200 and set(statuses[:-1]) == {409}, statuses
        path = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/checkout"
        assert kube.requests()[("GET", path)] == 1
        found = kube.get(VIRTUAL_SERVICE.api_version, "VirtualService", "shop", "checkout")
        assert found is not None
        assert found["spec"]["hosts"] == ["checkout.example.org"]
        assert found["metadata"]["labels"] == {"team": "pay"}  # their change kept

"""A pre-flight gate acts only where its replica leads (rollout/engine_gates.py), and a leader
that stops hands its Lease back only once its gates no longer act (bot/runtime.py `stop`).

The bot runs in this process on PostgreSQL, so with a Lease in the Kubernetes emulator, as one
of several replicas would; its pre-flight gate is a webhook that answers only when the test
lets it. A gate that ended after the Lease was handed back would record its result and carry
the rollout on while another replica already leads: either the stop waits for the gate as the
leader, or it abandons the gate, whose late end then records nothing (the next leader runs it
again). The same holds for a gate that ends after its replica lost the Lease.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config_loader import load_config_text
from bot.runtime import Runtime
from bot.shutdown import ACTING_RESERVE_S
from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox
from rollout.engine import Engine
from rollout.model import Phase
from rollout.start import StartRequest
from rollout.stores import STORE_URL_ENV, SqliteStore, open_store
from tests.fakes import FakeClock, FakeRouter, World
from tests.gates.conftest import Hook, canary_exists, gate_config, wait_until
from tests.test_engine import CONFIG

POD = "bot-a"
LEASE = ("coordination.k8s.io/v1", "Lease", "canary-bot", "canary-bot")


@pytest.fixture
def leader(
    tmp_path: Path, postgres_url: str, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sandbox]:
    """The bot leading on PostgreSQL, with a rollout whose webhook gate is in flight."""
    monkeypatch.setenv(STORE_URL_ENV, postgres_url)
    monkeypatch.setenv("POD_NAME", POD)
    hook.hang = True
    gate = {"webhook": {"url": hook.url, "timeout": "60s"}}
    box = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=gate_config(preflight=[gate], step_interval="1h"),
    )
    box.start()
    try:
        box.start_bot()
        assert holder(box) == POD
        reply = box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
        assert reply.status == 200
        wait_until(lambda: hook.received, what="the gate's webhook call")
        yield box
    finally:
        hook.release.set()
        box.stop()


def holder(box: Sandbox) -> str | None:
    lease = box.kube.get(*LEASE)
    return None if lease is None else lease["spec"].get("holderIdentity")


def running(box: Sandbox) -> Runtime:
    assert box.runtime is not None
    return box.runtime


def stopped(box: Sandbox) -> Runtime:
    """The runtime, which the test stops itself (the sandbox does not stop it again)."""
    runtime = running(box)
    box.runtime = None
    return runtime


@pytest.mark.timeout(90)
def test_a_stopping_leader_lets_its_gate_finish_before_handing_the_lease_back(
    leader: Sandbox, hook: Hook
) -> None:
    runtime = stopped(leader)
    stopping = threading.Thread(target=runtime.stop, name="stop")
    stopping.start()
    # The beat stops among the first steps; the Lease is still this replica's while its gate
    # runs, so nobody else leads yet.
    wait_until(lambda: not runtime.scheduler.running, what="the beat to stop")
    assert holder(leader) == POD

    hook.release.set()
    stopping.join(timeout=60)
    assert not stopping.is_alive()
    # The gate's end was acted on as the leader (the canary created), and only then was the
    # Lease handed back.
    assert canary_exists(leader)
    assert holder(leader) is None
    writes = leader.kube.writes
    created = next(
        i
        for i, w in enumerate(writes)
        if w.method == "POST" and w.kind == "Deployment" and w.status == 201
    )
    released = next(
        i
        for i, w in enumerate(writes)
        if w.kind == "Lease" and w.method == "PUT" and not w.body["spec"].get("holderIdentity")
    )
    assert created < released


@pytest.mark.timeout(90)
def test_a_gate_still_running_at_the_stop_deadline_is_abandoned_and_records_nothing(
    leader: Sandbox, hook: Hook, postgres_url: str
) -> None:
    runtime = stopped(leader)
    # A deadline that leaves the gate about a second: the stop abandons it, then hands the
    # Lease back.
    runtime.stop(deadline=ACTING_RESERVE_S + 1)
    wait_until(lambda: holder(leader) is None, what="the Lease handed back")

    hook.release.set()  # the gate ends now, on a replica that no longer leads
    runtime.engine.drain()
    assert not canary_exists(leader)
    store = open_store(path=leader.workdir / "unused.db", url=postgres_url)
    try:
        (rollout,) = store.history("checkout")
        # The record still names the gate as running: the next leader runs it again.
        assert (rollout.phase, rollout.gate, rollout.gate_results) == (
            Phase.PENDING,
            "preflight:0",
            (),
        )
        actions = [row["action"] for row in store.audit_rows(rollout.id)]
        assert "gate passed" not in actions and "gate failed" not in actions
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_a_gate_that_ends_after_its_replica_lost_the_lease_records_nothing(
    tmp_path: Path, hook: Hook
) -> None:
    hook.hang = True
    gate = f"  preflight: [{{webhook: {{url: '{hook.url}', timeout: 60s}}}}]\n"
    config = load_config_text(CONFIG.replace("  rules: []\n", "  rules: []\n" + gate))
    world, leads = World(), [True]
    engine = Engine(
        config=config,
        store=SqliteStore(tmp_path / "canary.db"),
        routers={"replicas": FakeRouter(world)},
        clock=FakeClock(),
        leading=lambda: leads[0],
    )
    try:
        accepted = engine.accept(
            StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
        )
        assert accepted is not None
        engine.begin(accepted.id)  # records the gate as started and launches it
        wait_until(lambda: hook.received, what="the gate's webhook call")

        calls = world.calls  # reading the stable workload, before the gate
        leads[0] = False  # the Lease is lost (or handed back) while the gate runs
        hook.release.set()
        engine.drain()
        rollout = engine.store.get(accepted.id)
        assert rollout is not None
        assert (rollout.phase, rollout.gate, rollout.gate_results) == (
            Phase.PENDING,
            "preflight:0",
            (),
        )
        assert "gate passed" not in [row["action"] for row in engine.store.audit_rows()]
        assert (world.calls, world.canary) == (calls, False)
    finally:
        engine.close()

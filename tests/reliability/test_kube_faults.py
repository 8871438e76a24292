"""A flaky Kubernetes API: 500s, 409 conflicts, latency and timeouts on the bot's requests.

With one write in five failing, every request 20 ms slow and some answers held back past the
client's timeout (the write happened, the bot cannot know), three rollouts side by side still
end where they should, and no step is announced before the cluster holds it: at the moment each
"Step N" reply reaches Slack, the canary and stable replica counts are the ones planned for
step N and the canary's pods are ready.

A rollback the cluster refuses to carry out must not end in a silent half-split: the rollout
goes to `failed` and on-call is paged, and (DESIGN.md) paged again until someone acts.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from canary_sandbox.sandbox import ALICE, BOB, CAROL, RELEASE_CHANNEL, Sandbox, stable_deployment
from emulators.kube import KubeEmulator
from emulators.slack import SlackDriver
from rollout.kube import KubeGateway
from rollout.model import Phase, Rollout
from rollout.traffic.replicas import split_replicas
from tests.reliability.support import card_of, open_approval, replicas, sandbox_config, wait_for

SERVICES = ("checkout", "cart", "search")
REPLICAS = 10
STEPS = (10, 20, 40, 60, 80)
STEP_TEXT = re.compile(r"Step (\d+) of \d+: the canary now gets \*([\d.]+)%\*")
ONCALL = "<!subteam^S0ONCALL>"


@dataclass(frozen=True)
class ClusterSample:
    wall: float
    canary: int | None
    canary_ready: int
    stable: int | None


class Sampler(threading.Thread):
    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(name="cluster-sampler", daemon=True)
        self._sandbox = sandbox
        self._stopping = threading.Event()
        self.samples: dict[str, list[ClusterSample]] = {s: [] for s in SERVICES}

    def run(self) -> None:
        while not self._stopping.wait(0.003):
            with self._sandbox.kube.store.lock:
                wall = time.time()
                for service in SERVICES:
                    sample = self._sample(service, wall)
                    history = self.samples[service]
                    if not history or replace(history[-1], wall=0) != replace(sample, wall=0):
                        history.append(sample)

    def _sample(self, service: str, wall: float) -> ClusterSample:
        canary = self._sandbox.kube.get("apps/v1", "Deployment", "shop", f"{service}-canary")
        ready = int((canary or {}).get("status", {}).get("readyReplicas", 0) or 0)
        return ClusterSample(
            wall=wall,
            canary=None if canary is None else int(canary["spec"]["replicas"]),
            canary_ready=ready,
            stable=replicas(self._sandbox, service),
        )

    def at(self, service: str, wall: float) -> ClusterSample | None:
        before = [s for s in self.samples[service] if s.wall <= wall]
        return before[-1] if before else None

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


def seed_services(sandbox: Sandbox, services: tuple[str, ...]) -> None:
    sandbox.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    for service in services:
        sandbox.kube.seed(stable_deployment(name=service, replicas=REPLICAS))


def count_timeouts(sandbox: Sandbox, counts: Counter[str]) -> None:
    """Count the answers the emulator holds back (it records errors and conflicts as writes,
    but not which answers it delayed). Reaches into the emulator: it has no public counter."""
    dice = sandbox.kube._frontend.dice
    roll = dice.roll
    faults = sandbox.kube.faults

    def counted(rate: float) -> bool:
        hit = roll(rate)
        if hit and rate == faults.timeout_rate:
            counts["timeouts"] += 1
        return hit

    dice.roll = counted  # type: ignore[method-assign]


@pytest.fixture
def flaky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sandbox, Sampler]]:
    # A held-back answer is a real client timeout after 0.5 s, retried within the deadline.
    monkeypatch.setattr("rollout.kube_call.ATTEMPT_TIMEOUT", 0.5)
    sandbox = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=sandbox_config(services=SERVICES, steps=STEPS),
        seed=False,
    )
    sandbox.start()
    sampler = Sampler(sandbox)
    try:
        seed_services(sandbox, SERVICES)
        sandbox.start_bot()
        sampler.start()
        yield sandbox, sampler
    finally:
        sampler.stop()
        sandbox.stop()


def step_ready(sandbox: Sandbox, service: str) -> Rollout | None:
    rollout = latest(sandbox, service)
    return rollout if rollout is not None and rollout.step_ready else None


def latest(sandbox: Sandbox, service: str) -> Rollout | None:
    assert sandbox.runtime is not None
    found = sandbox.runtime.store.history(service, limit=1)
    return found[0] if found else None


@pytest.mark.timeout(120)
def test_rollouts_reach_their_end_and_no_step_is_announced_early_under_faults(
    flaky: tuple[Sandbox, Sampler],
) -> None:
    sandbox, sampler = flaky
    faults = sandbox.kube.faults
    counts: Counter[str] = Counter()
    count_timeouts(sandbox, counts)
    # 10 % of writes fail with a 500 and a quarter of updates (PATCH, PUT) with a 409: about
    # one write in five fails, every kind of fault several times in every run.
    faults.error_rate, faults.conflict_rate = 0.1, 0.25
    faults.latency, faults.timeout_rate, faults.timeout_sleep = 0.02, 0.03, 0.8

    rollback_at = {"cart": 3}
    for service in SERVICES:
        reply = sandbox.driver.command(f"start {service} v2.4.0", user=BOB, channel=RELEASE_CHANNEL)
        assert reply.status == 200 and "Starting" in reply.body, reply.body
    acted: set[str] = set()
    deadline = time.monotonic() + 90
    while not all((r := latest(sandbox, s)) and r.phase.is_terminal for s in SERVICES):
        assert time.monotonic() < deadline, {s: latest(sandbox, s) for s in SERVICES}
        for service in set(SERVICES) - acted:
            rollout = latest(sandbox, service)
            if rollout is None:
                continue
            if service in rollback_at:
                if rollout.step_ready and rollout.step_index + 1 >= rollback_at[service]:
                    reply = sandbox.driver.command(
                        f"rollback {service}", user=ALICE, channel=RELEASE_CHANNEL
                    )
                    assert reply.status == 200, reply.body
                    acted.add(service)
            elif (approval := open_approval(sandbox, rollout.thread_ts)) is not None:
                assert sandbox.driver.click(message=approval, action_id="approve", user=CAROL)
                acted.add(service)
        time.sleep(0.05)
    faults.reset()
    assert sandbox.runtime is not None
    store = sandbox.runtime.store
    wait_for(lambda: not store.unsent(), what="every message sent")
    sampler.stop()

    writes = sandbox.kube.writes_snapshot()
    counts["errors (500)"] = sum(1 for w in writes if w.status == 500)
    counts["conflicts (409)"] = sum(
        1 for w in writes if w.status == 409 and w.method in ("PUT", "PATCH")
    )
    counts["writes"] = len(writes)
    failed = counts["errors (500)"] + counts["conflicts (409)"]
    print(f"kube faults injected: {dict(counts)}, {failed / len(writes):.0%} of writes failed")

    problems: list[str] = []
    for service in SERVICES:
        rollout = latest(sandbox, service)
        assert rollout is not None
        want = Phase.ROLLED_BACK if service in rollback_at else Phase.SUCCEEDED
        if rollout.phase != want:
            problems.append(f"{service} ended {rollout.phase} ({rollout.reason}), want {want}")
        problems += announced_step_problems(sandbox, sampler, rollout)
        if replicas(sandbox, f"{service}-canary") is not None:
            problems.append(f"{service}-canary is still there")
        if replicas(sandbox, service) != REPLICAS:
            problems.append(f"{service} has {replicas(sandbox, service)} replicas")
    assert not problems, "\n".join(problems) + f"\nfaults: {dict(counts)}"
    # The faults really happened, every kind of them.
    assert min(counts["errors (500)"], counts["conflicts (409)"], counts["timeouts"]) >= 1, counts
    assert failed / len(writes) >= 0.05, counts


def announced_step_problems(sandbox: Sandbox, sampler: Sampler, rollout: Rollout) -> list[str]:
    """Each "Step N" reply was posted while the cluster held step N's replicas, ready."""
    card = card_of(sandbox, rollout.id)
    if card is None:
        return [f"{rollout.id}: no card"]
    problems = []
    posts = {
        c.response.get("ts"): c.wall
        for c in sandbox.slack.calls_to("chat.postMessage")
        if c.ok and c.args.get("thread_ts") == card.ts
    }
    seen = []
    for reply in sandbox.slack.thread(RELEASE_CHANNEL, card.ts):
        match = STEP_TEXT.search(reply.text)
        if not match:
            continue
        step, weight = int(match.group(1)), float(match.group(2))
        seen.append(step)
        planned = STEPS[step - 1]
        canary, stable = split_replicas(REPLICAS, planned)
        at = sampler.at(rollout.service, posts[reply.ts])
        if weight != planned:
            problems.append(f"{rollout.id}: step {step} announced at {weight}%, planned {planned}%")
        if at is None or (at.canary, at.canary_ready, at.stable) != (canary, canary, stable):
            problems.append(
                f"{rollout.id}: step {step} announced while the cluster had {at} "
                f"(want {canary} canary ready, {stable} stable)"
            )
    if seen != list(range(1, len(seen) + 1)):
        problems.append(f"{rollout.id}: steps announced {seen}")
    return problems


# --------------------------------------------------------------------------- failed rollbacks


class ShiftedClock:
    """Wall time plus an offset the test moves forward: hours pass in a moment."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class FailedRollback:
    sandbox: Sandbox
    driver: SlackDriver
    clock: ShiftedClock
    rollout_id: str


@pytest.fixture(scope="module")
def failed_rollback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailedRollback]:
    """A rollout whose rollback the cluster refuses: every write fails from then on."""
    sandbox = Sandbox(
        workdir=tmp_path_factory.mktemp("failed") / "sandbox",
        config_text=sandbox_config(services=["checkout"], steps=[20, 50], step_interval="1h"),
        seed=False,
    )
    sandbox.start()
    try:
        seed_services(sandbox, ("checkout",))
        clock = ShiftedClock()
        sandbox.start_bot(clock=clock)
        driver = sandbox.driver
        driver.command("start checkout v2.4.0", user=BOB, channel=RELEASE_CHANNEL)
        rollout = wait_for(partial(step_ready, sandbox, "checkout"), what="the first step")
        sandbox.kube.faults.error_rate = 1.0
        reply = driver.command("rollback checkout", user=ALICE, channel=RELEASE_CHANNEL)
        assert reply.status == 200, reply.body
        wait_for(
            lambda: (r := latest(sandbox, "checkout")) and r.phase == Phase.FAILED,
            what="the rollback to be declared failed",
            timeout=60,
        )
        yield FailedRollback(sandbox=sandbox, driver=driver, clock=clock, rollout_id=rollout.id)
    finally:
        sandbox.stop()


def alerts(sandbox: Sandbox) -> list[Any]:
    return [m for m in sandbox.slack.messages(RELEASE_CHANNEL) if ONCALL in m.text]


@pytest.mark.timeout(90)
def test_a_rollback_that_cannot_complete_fails_and_pages_on_call(
    failed_rollback: FailedRollback,
) -> None:
    sandbox = failed_rollback.sandbox
    rollout = latest(sandbox, "checkout")
    assert rollout is not None and rollout.phase == Phase.FAILED
    assert rollout.reason and "rollback could not be completed" in rollout.reason
    assert sandbox.runtime is not None
    store = sandbox.runtime.store

    def paged() -> list[dict[str, Any]] | None:  # the audit row follows the page's post
        rows = store.audit_rows(rollout.id)
        return rows if any(r["action"] == "paged on-call" for r in rows) else None

    rows = wait_for(paged, what="the page")
    page = alerts(sandbox)[0]
    assert "ROLLBACK FAILED" in page.text
    assert "not* back on stable" in str(page.blocks)
    failures = [r for r in rows if "rollback attempt failed" in (r["detail"] or "")]
    assert len(failures) >= 5
    assert [r["action"] for r in rows].count("paged on-call") == 1
    card = card_of(sandbox, rollout.id)
    assert card is not None
    thread = sandbox.slack.thread(RELEASE_CHANNEL, card.ts)
    assert sum("rollback could not be completed" in m.text for m in thread) == 1
    # Not silent, and honest: the half-split is still there for a person to see.
    assert replicas(sandbox, "checkout-canary") == split_replicas(REPLICAS, 20)[0]


@pytest.mark.timeout(60)
def test_a_failed_rollback_pages_again_until_someone_acts(failed_rollback: FailedRollback) -> None:
    sandbox, clock = failed_rollback.sandbox, failed_rollback.clock
    wait_for(lambda: alerts(sandbox), what="the first page")
    for hours in (1, 2):
        clock.offset = timedelta(hours=hours)
        wait_for(
            lambda h=hours: len(alerts(sandbox)) >= 1 + h,  # type: ignore[misc]
            what=f"page #{hours + 1}, {hours}h after the first",
            timeout=5,
        )


@pytest.mark.timeout(60)
def test_someone_can_act_on_a_failed_rollback(failed_rollback: FailedRollback) -> None:
    """While it is failed, nothing new starts on the half-split service; a deployer can stop
    the pages (`/canary pause` acknowledges) and retry the rollback (`/canary rollback`)."""
    sandbox, driver, clock = failed_rollback.sandbox, failed_rollback.driver, failed_rollback.clock
    refused = driver.command("start checkout v2.4.1", user=BOB, channel=RELEASE_CHANNEL)
    assert "failed" in refused.body.lower(), refused.body

    acknowledged = driver.command("pause checkout", user=ALICE, channel=RELEASE_CHANNEL)
    assert acknowledged.status == 200 and not acknowledged.body, acknowledged.body
    sandbox.drain()  # the pause is recorded before the ack; its follow-up runs after it
    paged = len(alerts(sandbox))
    clock.offset += timedelta(hours=4)
    # A tick run here, not a beat hoped for: a page would be due on it (4 h > repage interval).
    assert sandbox.runtime is not None
    sandbox.runtime.engine.tick(failed_rollback.rollout_id)
    assert len(alerts(sandbox)) == paged, "paged again after someone acknowledged"

    # The cluster is still refusing writes when the retry is asked for, so the bot's own
    # retries cannot finish first and make this command moot.
    retried = driver.command("rollback checkout", user=ALICE, channel=RELEASE_CHANNEL)
    assert retried.status == 200 and not retried.body, retried.body
    sandbox.kube.faults.reset()  # the API server is healthy again
    wait_for(
        lambda: (r := latest(sandbox, "checkout")) and r.phase == Phase.ROLLED_BACK,
        what="the retried rollback to finish",
        timeout=20,
    )
    assert replicas(sandbox, "checkout-canary") is None
    assert replicas(sandbox, "checkout") == REPLICAS


@pytest.mark.timeout(30)
def test_a_failing_write_is_retried_with_growing_jittered_backoff() -> None:
    """Six attempts, each wait drawn at random below a cap that doubles (tenacity's
    `wait_random_exponential`): bounded, really waiting, and never in lockstep."""
    caps = [0.05 * 2**k for k in range(5)]
    gaps: list[tuple[float, float]] = []  # (gap, its cap)
    with KubeEmulator() as kube:
        kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        kube.seed(stable_deployment())
        gateway = KubeGateway(kube.api_client())
        kube.faults.error_rate = 1.0
        for _ in range(3):
            kube.clear_writes()
            with pytest.raises(ApiException):
                gateway.scale_deployment("shop", "checkout", 3)
            attempts = [w.at for w in kube.writes_snapshot()]
            assert len(attempts) == 6
            waited = [later - earlier for earlier, later in itertools.pairwise(attempts)]
            gaps += list(zip(waited, caps, strict=True))
    assert all(gap <= cap + 0.15 for gap, cap in gaps), gaps  # + the time to answer
    assert sum(gap for gap, _ in gaps) > 0.5, gaps  # it does back off
    assert any(gap < cap / 2 for gap, cap in gaps), gaps  # drawn at random, not fixed

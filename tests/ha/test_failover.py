"""Three replicas, one leader: SIGKILL of the leader, and a leader cut off from everything.

DESIGN.md ("High availability") promises that one replica leads and alone acts, that losing
any replica loses no rollout, skips or repeats no step and posts no message twice, and that a
replica that lost the Lease changes nothing. These tests run three `canary-bot serve`
processes on one PostgreSQL database with the Kubernetes and Slack emulators and a real
Prometheus (tests/ha/harness.py), with a 3 s lease, 2 s renew deadline and 1 s retry period.
Every wait polls what can be observed (the Lease, `/readyz`, the database, the emulators'
records) with a deadline; the failover times are printed (bench/failover.py measures them).
"""

from __future__ import annotations

import itertools
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, STABLE_IMAGE
from emulators.slack import Message
from rollout.model import Rollout
from rollout.stores import Store, open_store
from tests.ha.harness import EXIT_LOST_LEASE, HaWorld, Replica, wait_for
from tests.reliability.support import steps_entered

pytestmark = pytest.mark.prometheus
STEP_TEXT = re.compile(r"Step (\d+) of (\d+): the canary now gets")
EPOCH = re.compile(r"epoch (\d+)")


def image(n: int) -> str:
    return STABLE_IMAGE.replace(":v2.3.4", f":v2.3.{5 + n}")


@dataclass
class Failovers:
    """What the test saw at each kill: the moment, and how long until the new leader acted."""

    world: HaWorld
    store: Store
    seen: list[str] = field(default_factory=list)

    def kill_leader(self, moment: str) -> Replica:
        leader = self.world.leader()
        killed_at = datetime.now(UTC)
        started = time.monotonic()
        leader.kill()
        new = self.world.leader(other_than=leader.name, timeout=60)
        elected = time.monotonic() - started
        ticked = self._first_tick_after(killed_at, started)
        self.seen.append(
            f"{moment}: {leader.name} killed; {new.name} leads after {elected:.1f}s"
            + (f", first tick after {ticked:.1f}s" if ticked is not None else "")
        )
        leader.start()  # as Kubernetes restarts the pod's container
        return new

    def _first_tick_after(self, killed_at: datetime, started: float) -> float | None:
        """Seconds until the new leader's first analysis tick stored a measurement."""
        rollout = self.store.active_for("checkout")
        if rollout is None:
            return None
        wait_for(
            lambda: (
                self.store.measurements(rollout.id, since=killed_at)
                or self.store.active_for("checkout") is None
            ),
            what="the new leader's first tick",
            timeout=60,
        )
        return time.monotonic() - started


@pytest.fixture
def store(world: HaWorld) -> Iterator[Store]:
    opened = open_store(path=world.workdir / "unused.db", url=world.store_url)
    try:
        yield opened
    finally:
        opened.close()


def rollout_now(store: Store, rollout_id: str) -> Rollout:
    found = store.get(rollout_id)
    assert found is not None
    return found


def thread(world: HaWorld, store: Store, rollout_id: str) -> list[Message]:
    root = rollout_now(store, rollout_id).thread_ts
    return world.sandbox.slack.thread(RELEASE_CHANNEL, root) if root else []


def approval_request(world: HaWorld, store: Store, rollout_id: str) -> Message | None:
    for message in thread(world, store, rollout_id):
        for block in message.blocks:
            if any(e.get("action_id") == "approve" for e in block.get("elements", [])):
                return message
    return None


def canary_scales(world: HaWorld) -> int:
    return sum(
        1
        for w in world.sandbox.kube.writes
        if w.name == "checkout-canary" and w.subresource == "scale" and w.status == 200
    )


def run_rollout(world: HaWorld, store: Store, failovers: Failovers, n: int) -> str:
    """One rollout with the leader killed during a step change, at the approval gate and
    during promotion (and once at a random moment in the first rollout)."""
    reply = world.driver().command(f"start checkout {image(n)}", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    rollout = wait_for(lambda: store.active_for("checkout"), what="the start saved", timeout=30)
    if n == 0:
        time.sleep(world.rng.uniform(0.2, 1.5))  # a random moment, not a wait for a state
        failovers.kill_leader("random moment after the start")

    # During a step change: as soon as the cluster has the second step's replica count.
    scaled = canary_scales(world)
    wait_for(
        lambda: canary_scales(world) > scaled and rollout_now(store, rollout.id).step_index >= 1,
        what="a step change on the cluster",
        timeout=60,
    )
    failovers.kill_leader(f"rollout {n}: step change")

    wait_for(
        lambda: rollout_now(store, rollout.id).phase.value == "awaiting_approval",
        what="the approval gate",
        timeout=90,
    )
    failovers.kill_leader(f"rollout {n}: approval gate")
    request = wait_for(
        lambda: approval_request(world, store, rollout.id), what="the approval request", timeout=60
    )
    clicked = world.driver().click(message=request, action_id="approve", user=CAROL)
    assert clicked.status == 200, clicked.body

    wait_for(
        lambda: rollout_now(store, rollout.id).phase.value in ("promoting", "succeeded"),
        what="promotion",
        timeout=60,
    )
    failovers.kill_leader(f"rollout {n}: promotion")
    wait_for(
        lambda: rollout_now(store, rollout.id).phase.value == "succeeded",
        what=f"rollout {n} to succeed",
        timeout=90,
    )
    return rollout.id


@pytest.mark.timeout(900)
def test_leader_killed_ten_times_across_three_rollouts_loses_and_repeats_nothing(
    world: HaWorld, store: Store
) -> None:
    world.leader()
    world.all_ready()
    failovers = Failovers(world, store)
    ids = [run_rollout(world, store, failovers, n) for n in range(3)]
    print("\n".join(failovers.seen))
    assert len(failovers.seen) >= 10
    # The last messages go out after the last decision: wait until the outbox is empty.
    wait_for(lambda: not store.unsent(), what="the outbox to be sent", timeout=60)

    problems = [
        *(problem for n, rid in enumerate(ids) for problem in rollout_problems(store, rid, n)),
        *slack_problems(world, store, ids),
        *epoch_problems(store),
    ]
    stable = world.sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout")
    assert stable is not None
    final = stable["spec"]["template"]["spec"]["containers"][0]["image"]
    if final != image(2):
        problems.append(f"stable runs {final}, want {image(2)}")
    assert not problems, "\n".join(problems + failovers.seen)


def rollout_problems(store: Store, rollout_id: str, n: int) -> Iterator[str]:
    rollout = rollout_now(store, rollout_id)
    if rollout.phase.value != "succeeded":
        yield f"rollout {n} ended {rollout.phase.value}, want succeeded"
    audit = store.audit_rows(rollout_id)
    actions = Counter((row["actor"], row["action"]) for row in audit)
    for wanted in ((BOB, "start"), (CAROL, "approve"), ("canary-bot", "promoted")):
        if actions[wanted] != 1:
            yield f"rollout {n}: {actions[wanted]} audit rows {wanted}, want one"
    entered = steps_entered(audit)
    if entered != [1, 2, 3]:
        yield f"rollout {n}: audit shows steps entered {entered}, want 1, 2, 3 once each"


def posted_twice(world: HaWorld) -> dict[tuple[str, str], int]:
    """Every message the bot posts carries (rollout, key) in its metadata: those seen twice."""
    slack = world.sandbox.slack
    posted: Counter[tuple[str, str]] = Counter()
    for root in slack.messages(RELEASE_CHANNEL):
        for message in [root, *slack.thread(RELEASE_CHANNEL, root.ts)]:
            payload = (message.metadata or {}).get("event_payload") or {}
            if payload.get("key"):  # a chart's file upload carries none
                posted[(str(payload.get("rollout")), str(payload["key"]))] += 1
    return {key: count for key, count in posted.items() if count > 1}


def slack_problems(world: HaWorld, store: Store, ids: list[str]) -> Iterator[str]:
    twice = posted_twice(world)
    if twice:
        yield f"messages posted more than once: {twice}"
    roots = world.sandbox.slack.messages(RELEASE_CHANNEL)
    if len(roots) != len(ids):
        yield f"{len(roots)} status cards, want {len(ids)}"
    for n, rollout_id in enumerate(ids):
        replies = thread(world, store, rollout_id)
        steps = [m.group(1) for m in map(STEP_TEXT.search, (r.text for r in replies)) if m]
        if steps != ["1", "2", "3"]:
            yield f"rollout {n}: step announcements {steps}, want 1, 2, 3 once each"
        released = sum("Released" in r.text for r in replies)
        if released != 1:
            yield f"rollout {n}: {released} 'Released' replies, want one"


def epoch_problems(store: Store) -> Iterator[str]:
    """Fencing: once a leader of a later epoch has written, no row of an earlier one follows."""
    epochs = [row["epoch"] for row in store.audit_rows() if row.get("epoch") is not None]
    late = [(a, b) for a, b in itertools.pairwise(epochs) if b < a]
    if late:
        yield f"audit rows of an older leader after a newer one's: {late[:5]}"
    epoch, _ = store.leadership()
    if epoch < 11:
        yield f"leadership epoch {epoch}: want at least 11 (the first leader and 10 takeovers)"


def leader_epoch(replica: Replica) -> int:
    match = EPOCH.search(replica.readyz()[1])
    assert match is not None, replica.readyz()
    return int(match.group(1))


@pytest.mark.timeout(300)
def test_a_leader_cut_off_steps_down_and_nothing_it_writes_lands_after_the_takeover(
    world: HaWorld, store: Store
) -> None:
    world.all_ready()
    old = world.leader()
    old_epoch = leader_epoch(old)
    reply = world.driver().command(f"start checkout {image(0)}", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    rollout = wait_for(lambda: store.active_for("checkout"), what="the start saved", timeout=30)
    wait_for(lambda: rollout_now(store, rollout.id).step_index >= 0, what="step 1", timeout=60)

    # Cut off from the API server (the emulator refuses its User-Agent) and from the database.
    refused = world.sandbox.kube.faults.refused
    world.sandbox.kube.faults.cut_off(f"({old.name})")
    old.relay.cut()
    new = world.leader(other_than=old.name, timeout=60)
    assert world.sandbox.kube.faults.refused > refused
    # It stepped down on its own: it exits so that its pod restarts as a follower.
    assert old.proc is not None
    assert old.proc.wait(timeout=30) == EXIT_LOST_LEASE, old.log_tail()
    new_epoch = leader_epoch(new)
    assert new_epoch > old_epoch

    # Reconnected, restarted, it follows; the rollout carries on under the new leader.
    world.sandbox.kube.faults.reconnect()
    old.relay.mend()
    old.start()
    wait_for(old.ready, what="the old leader back as a follower", timeout=60)
    assert old.readyz()[1].startswith(f"follower ({old.name}, leader {new.name})")
    step = rollout_now(store, rollout.id).step_index
    wait_for(
        lambda: (
            rollout_now(store, rollout.id).step_index > step
            or rollout_now(store, rollout.id).phase.value == "awaiting_approval"
        ),
        what="the next step under the new leader",
        timeout=60,
    )

    rows = [row for row in store.audit_rows() if row.get("epoch") is not None]
    first_new = next(i for i, row in enumerate(rows) if row["epoch"] == new_epoch)
    after = [row for row in rows[first_new:] if row["epoch"] < new_epoch]
    assert after == [], f"rows of an old leader written after epoch {new_epoch} began: {after}"
    assert any(row["epoch"] == old_epoch for row in rows), "the old leader wrote nothing at all"


@pytest.mark.timeout(300)
def test_a_paused_leader_wakes_fenced_and_posts_nothing(world: HaWorld, store: Store) -> None:
    """SIGSTOP for longer than the lease: the others take over while the old leader cannot
    notice; on SIGCONT it must neither write nor post before it steps down."""
    world.all_ready()
    reply = world.driver().command(f"start checkout {image(0)}", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    rollout = wait_for(lambda: store.active_for("checkout"), what="the start saved", timeout=30)
    wait_for(lambda: rollout_now(store, rollout.id).step_index >= 0, what="step 1", timeout=60)
    old = world.leader()
    old_epoch = leader_epoch(old)
    assert old.proc is not None
    old.proc.send_signal(signal.SIGSTOP)
    try:
        new = world.leader(other_than=old.name, timeout=60)
        new_epoch = leader_epoch(new)
        # The new leader moves the rollout on while the old one sleeps.
        step = rollout_now(store, rollout.id).step_index
        wait_for(
            lambda: rollout_now(store, rollout.id).step_index > step,
            what="a step by the new leader",
            timeout=60,
        )
    finally:
        old.proc.send_signal(signal.SIGCONT)
    assert old.proc.wait(timeout=30) == EXIT_LOST_LEASE, old.log_tail()

    rows = [row for row in store.audit_rows() if row.get("epoch") is not None]
    first_new = next(i for i, row in enumerate(rows) if row["epoch"] == new_epoch)
    assert [r for r in rows[first_new:] if r["epoch"] == old_epoch] == []
    assert posted_twice(world) == {}
    steps = [
        m.group(1)
        for m in map(STEP_TEXT.search, (r.text for r in thread(world, store, rollout.id)))
        if m
    ]
    assert steps == [str(n) for n in range(1, len(steps) + 1)], steps

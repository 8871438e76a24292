"""The engine driven through fake ports (tests/fakes.py): a crash between any two outside
calls of a decision, replayed by a fresh engine on the same store and world, ends in the same
state with the same messages, each posted once.

A "call" is any cluster or Slack call, and also the moment right after a post landed in Slack
but before the bot recorded it. The clean run counts them; the test then crashes once at each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bot.config_loader import load_config_text
from rollout.analysis import Analyzer, Series
from rollout.chart_worker import ChartWorker
from rollout.commands import Approve, Rollback
from rollout.engine import Engine
from rollout.machine import MAX_ROLLBACK_ATTEMPTS
from rollout.model import Phase, Rollout
from rollout.sender import OutboxSender
from rollout.start import StartRequest
from rollout.store import SqliteStore
from tests.fakes import Crash, FakeClock, FakeNotifier, FakeRouter, World

CONFIG = """\
slack:
  release_channels: [C0RELEASES]
defaults:
  steps: [25, 50]
  step_interval: 10s
  analysis_interval: 1s
  rules: []
services:
  checkout:
    namespace: shop
    deployment: checkout
    strategy: replicas
"""


@dataclass(frozen=True)
class Script:
    """When to act (given the rollout), and with which command."""

    name: str
    steps: tuple[int, ...]
    approval: bool
    act_when: Callable[[Rollout], bool]
    command: Callable[[], Approve | Rollback]
    # Slack misbehaving: the first posts answered 429 (Retry-After: 10), then some that land
    # but time out (the sender cannot tell they landed).
    rate_limited: int = 0
    land_then_fail: int = 0


ROLLBACK = Script(
    name="rollback at step 2",
    steps=(25, 50),
    approval=False,
    act_when=lambda r: r.phase == Phase.PROGRESSING and r.step_index == 1 and r.step_ready,
    command=lambda: Rollback(by="UBOB", reason="wrong tag"),
)
SLACK_FAILING = Script(
    name="rollback with Slack answering 429 and timing out",
    steps=(25, 50),
    approval=False,
    act_when=ROLLBACK.act_when,
    command=ROLLBACK.command,
    rate_limited=3,
    land_then_fail=2,
)
PROMOTION = Script(
    name="approved promotion",
    steps=(25,),
    approval=True,
    act_when=lambda r: r.phase == Phase.AWAITING_APPROVAL,
    command=lambda: Approve(by="UCAROL"),
)


def run(script: Script, db: Path, *, crash_at: int | None) -> tuple[Rollout, World, int]:
    """Drive to the end, restarting (a fresh engine and sender) after each crash."""
    world = World(
        crash_at=crash_at,
        rate_limit_next=script.rate_limited,
        land_then_fail_next=script.land_then_fail,
    )
    clock = FakeClock()
    store = SqliteStore(db)
    config = load_config_text(CONFIG)
    crashes = 0
    for _ in range(300):
        engine = Engine(
            config=config, store=store, routers={"replicas": FakeRouter(world)}, clock=clock
        )
        sender = OutboxSender(
            store=store,
            notifier=FakeNotifier(world),
            clock=clock,
            snapshots=lambda rollout, at: None,
            monotonic=lambda: clock.now().timestamp(),  # Retry-After passes as the clock moves
        )
        try:
            store.recover_sending()  # what a restarted sender does first
            engine.reconcile()
            if (done := drive(script, engine, sender, clock)) is not None:
                return done, world, crashes
        except Crash:
            crashes += 1
        finally:
            engine.close()
    raise AssertionError("the rollout did not end")


def drive(script: Script, engine: Engine, sender: OutboxSender, clock: FakeClock) -> Rollout | None:
    store = engine.store
    for _ in range(100):
        found = store.history("checkout", limit=1)
        if not found:
            request = StartRequest(
                service="checkout",
                image="v2",
                by="UALICE",
                channel="C0RELEASES",
                steps=script.steps,
                approval=script.approval,
            )
            engine.accept(request)
            continue
        rollout = found[0]
        if rollout.phase.is_terminal and not store.unsent():
            return rollout
        acted = any(row["actor"] in ("UBOB", "UCAROL") for row in store.audit_rows(rollout.id))
        if not acted and script.act_when(rollout):
            engine.command(rollout.id, script.command(), action="act")
        engine.tick(rollout.id)
        sender.send_due()
        clock.advance(5)
    return None


@pytest.mark.parametrize("script", [ROLLBACK, SLACK_FAILING, PROMOTION], ids=lambda s: s.name)
def test_a_crash_between_any_two_calls_replays_to_the_same_end(
    script: Script, tmp_path: Path
) -> None:
    clean, world, _ = run(script, tmp_path / "clean.db", crash_at=None)
    calls = world.calls
    expected_posts = Counter(what for _, what in world.posts.values())
    cluster = (world.weight, world.canary, world.stable_image)
    assert len(world.posted) == len(set(world.posted))
    assert calls > 10

    for crash_at in range(1, calls + 1):
        ended, replayed, crashes = run(script, tmp_path / f"crash-{crash_at}.db", crash_at=crash_at)
        where = f"crashed at call {crash_at} ({replayed.log[crash_at - 1]})"
        assert crashes == 1, where
        assert (ended.phase, ended.weight, ended.reason) == (
            clean.phase,
            clean.weight,
            clean.reason,
        ), where
        assert (replayed.weight, replayed.canary, replayed.stable_image) == cluster, where
        assert Counter(what for _, what in replayed.posts.values()) == expected_posts, where
        # Each message posted once: no key ever landed twice.
        assert len(replayed.posted) == len(set(replayed.posted)), (where, replayed.posted)


def test_the_messages_of_a_rollback_follow_the_cluster_work(tmp_path: Path) -> None:
    """Cluster first: nothing about the rollback is posted before traffic is on stable."""
    _, world, _ = run(ROLLBACK, tmp_path / "order.db", crash_at=None)
    rolled_back = world.log.index("roll back")
    first_post_after_command = next(
        i for i, what in enumerate(world.log) if what.startswith("post RollbackStarted")
    )
    assert rolled_back < first_post_after_command, world.log


def test_one_tick_saves_the_rollout_at_most_twice(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "saves.db")
    world, clock = World(), FakeClock()
    engine = Engine(
        config=load_config_text(CONFIG),
        store=store,
        routers={"replicas": FakeRouter(world)},
        clock=clock,
    )
    accepted = engine.accept(
        StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
    )
    assert accepted is not None
    engine.tick(accepted.id)  # the first tick: resolve, create, first step
    saves: list[int] = []
    for _ in range(8):
        clock.advance(5)
        before = len(store.audit_rows(accepted.id))
        engine.tick(accepted.id)
        rows = store.audit_rows(accepted.id)[before:]
        saves.append(sum(1 for row in rows if row["after"] is not None))
    engine.close()
    assert max(saves) <= 2, saves


class BrokenCanary:
    """A `MetricsProvider` whose answers say both tracks fail half their requests: as the
    built-in request query groups them (namespace, service, track, code), one request a second
    answered 500 and one 200; any other query reads 0.5."""

    def query(self, promql: str) -> list[Series]:
        labels = {"namespace": "shop", "service": "checkout"}
        codes = (
            ("500", "200")
            if promql.startswith("sum by (namespace, service, track, code)")
            else ("",)
        )
        return [
            Series({**labels, "track": track, "code": code}, 1.0 if code else 0.5)
            for track in ("canary", "stable")
            for code in codes
        ]


def test_a_rollback_that_fails_for_good_pages_the_failure_not_traffic_on_stable(
    tmp_path: Path,
) -> None:
    """A breach page says traffic is back on stable; if the rollback then fails for good,
    that page (held until the cluster work was done) is never sent: the failure's is."""
    store = SqliteStore(tmp_path / "failed.db")
    world, clock = World(rollback_fails=True), FakeClock()
    rules = "rules: [{metric: error_rate, above: 0.05, for: 0s}]"
    engine = Engine(
        config=load_config_text(CONFIG.replace("rules: []", rules)),
        store=store,
        routers={"replicas": FakeRouter(world)},
        clock=clock,
        analyzer=Analyzer(BrokenCanary()),
    )
    sender = OutboxSender(
        store=store, notifier=FakeNotifier(world), clock=clock, snapshots=lambda r, at: None
    )
    charts = ChartWorker(store=store, notifier=FakeNotifier(world), render=lambda *_: b"png")
    accepted = engine.accept(
        StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
    )
    assert accepted is not None
    for _ in range(MAX_ROLLBACK_ATTEMPTS + 3):
        engine.tick_all(wait_for_ticks=True)
        sender.send_due()
        charts.work_due()
        clock.advance(1)
    engine.close()
    failed = store.get(accepted.id)
    assert failed is not None and failed.phase == Phase.FAILED, failed
    posted = [what for _, what in world.posts.values()]
    assert "alert: checkout: ROLLBACK FAILED — act now" in posted, posted
    assert "alert: checkout: canary breached a rollback rule" not in posted, posted
    assert not store.unsent()


def test_restart_puts_no_step_weight_back_on_a_rollout_paused_while_promoting(
    tmp_path: Path,
) -> None:
    """Drift paused it during promotion: stable is half-way to the new image, so the last
    step's weight must not be re-applied (it would scale stable back down)."""
    store = SqliteStore(tmp_path / "paused.db")
    world, clock = World(), FakeClock()
    engine = Engine(
        config=load_config_text(CONFIG),
        store=store,
        routers={"replicas": FakeRouter(world)},
        clock=clock,
    )
    accepted = engine.accept(
        StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
    )
    assert accepted is not None
    engine.tick_all(wait_for_ticks=True)
    started = store.get(accepted.id)
    assert started is not None and started.step_index == 0
    for paused_from, reapplied in ((Phase.PROGRESSING, True), (Phase.PROMOTING, False)):
        store.save(
            started,
            replace(started, phase=Phase.PAUSED, paused_from=paused_from),
            actor="test",
            action="pause",
        )
        world.log.clear()
        engine.reconcile()
        assert any(c.startswith("set weight") for c in world.log) is reapplied, paused_from
        started = store.get(accepted.id) or started
    engine.close()

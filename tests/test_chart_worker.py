"""Charts off the beat: a snapshot's chart is rendered and uploaded by a worker of its own.

A tick only queues the snapshot (its table and its chart); the outbox sender posts the table
in the thread's order; the chart worker renders and uploads the chart afterwards. So a chart
that takes long to render holds up nothing else: neither the tick, nor the table, nor another
rollout's messages; and a chart that cannot be rendered still leaves the table in the thread.
The renderer here blocks on an Event the test holds, so "before the chart is rendered" is a
fact of the test, not a matter of timing. Cluster and Slack are faked (tests/fakes.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bot.config_loader import load_config_text
from rollout.analysis import Analyzer, Series
from rollout.chart_worker import ChartWorker, Render
from rollout.commands import Rollback
from rollout.engine import Engine
from rollout.model import Rollout
from rollout.sender import OutboxSender
from rollout.start import StartRequest
from rollout.store import SqliteStore
from tests.fakes import FakeClock, FakeNotifier, FakeRouter, World
from tests.reliability.support import wait_for

CONFIG = """\
slack:
  release_channels: [C0RELEASES]
defaults:
  steps: [25, 50]
  step_interval: 10m
  analysis_interval: 1s
  approval: false
  rules: [{metric: error_rate, above: 0.05, for: 0s}]
services:
  checkout: {namespace: shop, deployment: checkout, strategy: replicas}
  payments: {namespace: shop, deployment: payments, strategy: replicas}
"""


class Healthy:
    """Prometheus saying both tracks of every service serve without errors."""

    def query(self, promql: str) -> list[Series]:
        return [
            Series({"namespace": "shop", "service": service, "track": track}, 0.0)
            for service in ("checkout", "payments")
            for track in ("canary", "stable")
        ]


class Bot:
    """The engine, the outbox sender (driven by the test) and the chart worker (its own
    thread, as in production), sharing one store, one fake Slack and one fake clock."""

    def __init__(self, tmp_path: Path, render: Render) -> None:
        self.world, self.clock = World(), FakeClock()
        self.store = SqliteStore(tmp_path / "canary.db")
        self.engine = Engine(
            config=load_config_text(CONFIG),
            store=self.store,
            routers={"replicas": FakeRouter(self.world)},
            clock=self.clock,
            analyzer=Analyzer(Healthy()),
            on_queued=lambda: self.charts.wake(),
        )
        notifier = FakeNotifier(self.world)
        self.sender = OutboxSender(
            store=self.store,
            notifier=notifier,
            clock=self.clock,
            snapshots=self.engine.observer.snapshot_at,
        )
        self.charts = ChartWorker(store=self.store, notifier=notifier, render=render)

    def start(self, service: str) -> Rollout:
        request = StartRequest(service=service, image="v2", by="UALICE", channel="C0RELEASES")
        accepted = self.engine.accept(request)
        assert accepted is not None
        return accepted

    def beat(self) -> None:
        self.engine.tick_all(wait_for_ticks=True)
        self.sender.send_due()
        self.clock.advance(1)

    def close(self) -> None:
        self.charts.stop()
        self.engine.close()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    released = threading.Event()
    yield released
    released.set()  # never leave the worker blocked, whatever the test did


def test_a_tick_with_a_chart_due_returns_before_the_chart_is_rendered(
    tmp_path: Path, gate: threading.Event
) -> None:
    rendering = threading.Event()

    def render(rollout: Rollout, at: datetime, title: str) -> bytes:
        rendering.set()
        assert gate.wait(timeout=30), "the test never let the chart be rendered"
        return b"\x89PNG"

    bot = Bot(tmp_path, render)
    bot.charts.start()
    try:
        payments = bot.start("payments")
        bot.start("checkout")
        while "snapshot:step:1" not in bot.world.posts:
            bot.beat()  # each tick returns, with the chart of step 1 queued and not rendered
        wait_for(rendering.is_set, what="the chart worker to be rendering step 1's chart")
        assert bot.world.charts == []

        # While the chart is stuck in matplotlib: the table is in the thread, and another
        # rollout's rollback goes through, ticks and messages alike.
        assert bot.engine.command(payments.id, Rollback(by="UBOB", reason="bad"), action="rollback")
        bot.beat()
        rolled_back = bot.store.get(payments.id)
        assert rolled_back is not None and rolled_back.phase == "rolled_back"
        assert "finished:rolled_back" in bot.world.posts
        assert bot.world.charts == [] and not gate.is_set()

        gate.set()  # both rollouts' step-1 charts, one after the other
        wait_for(lambda: len(bot.world.charts) == 2, what="the charts to be uploaded")
        assert bot.world.charts == ["Step 1 of 2 reached"] * 2
        assert not bot.store.unsent()
    finally:
        bot.close()


def test_a_chart_that_fails_to_render_still_leaves_the_table_in_the_thread(
    tmp_path: Path,
) -> None:
    def render(rollout: Rollout, at: datetime, title: str) -> bytes:
        raise RuntimeError("matplotlib: cannot allocate the figure")

    bot = Bot(tmp_path, render)
    try:
        bot.start("checkout")
        while "snapshot:step:1" not in bot.world.posts:
            bot.beat()
        assert bot.charts.work_due() == 0
        assert bot.world.posts["snapshot:step:1"][1] == "snapshot"  # the table is there
        assert bot.world.charts == []
        dropped = [row.key for row in bot.store.outbox(states=("dropped",))]
        assert dropped == ["chart:snapshot:step:1"]
        assert not bot.store.unsent()  # nothing waits for the chart, or retries it
    finally:
        bot.close()

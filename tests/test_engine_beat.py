"""A beat reads what its ticks need from the store once, not once per rollout.

At 1,000 rollouts every per-rollout read is 1,000 queries a beat, queued on the store's one
lock behind each other (bench/scale.py): the record was read four times per tick, the
measurements and the held messages once each, and each measurement was its own transaction.
Counted here on a real SqliteStore whose method look-ups are counted; the cluster and Slack
are faked (tests/fakes.py) and time is moved by hand.

A tick that decides on the beat's record must not act on it once it is out of date: a rollback
recorded by another replica after the beat read the record, and before the tick, is what the
tick carries out, not the step the old record still asked for.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.config_loader import load_config_text
from rollout.analysis import Analyzer, Series
from rollout.commands import Rollback
from rollout.engine import Engine
from rollout.model import Phase, Rollout
from rollout.outbox import CARD
from rollout.start import StartRequest
from rollout.store import SqliteStore
from rollout.traffic.base import TrafficStatus
from tests.builders import many_services_config, progressing_rollout, rollout_plan
from tests.fakes import FakeClock, FakeRouter, World
from tests.test_engine import CONFIG

ROLLOUTS = 250
COUNTED = frozenset(
    {
        "get",
        "active",
        "holding",
        "release",
        "outbox_mark",
        "save",
        "measurements",
        "measurements_of",
        "stored_measurements_of",
        "add_measurement",
        "add_measurements",
    }
)


class CountingStore(SqliteStore):
    """A real SqliteStore that counts how often each store method is looked up (called)."""

    calls: Counter[str]

    def __getattribute__(self, name: str) -> Any:
        if name in COUNTED:
            object.__getattribute__(self, "calls")[name] += 1
        return super().__getattribute__(name)


class Healthy:
    """Prometheus answering every query with a one for both tracks of every service: a
    request rate of one, none of them errors."""

    def __init__(self, services: list[str]) -> None:
        self._series = [
            Series({"namespace": "shop", "service": service, "track": track}, 1.0)
            for service in services
            for track in ("canary", "stable")
        ]

    def query(self, promql: str) -> list[Series]:
        return self._series


def error_rate_engine(
    store: CountingStore, clock: FakeClock, services: list[str], prometheus: Any
) -> Engine:
    """An engine over `services`, each judged on one error-rate rule, on the replicas router."""
    return Engine(
        config=load_config_text(
            many_services_config(
                services, rules=[{"metric": "error_rate", "above": 0.05, "for": "1m"}]
            )
        ),
        store=store,
        routers={"replicas": FakeRouter(World(weight=25))},
        clock=clock,
        analyzer=Analyzer(prometheus),
    )


def test_a_quiet_beat_reads_the_store_once_not_once_per_rollout(tmp_path: Path) -> None:
    services = [f"svc-{index:04d}" for index in range(ROLLOUTS)]
    store, clock = CountingStore(tmp_path / "canary.db"), FakeClock()
    store.calls = Counter()
    plan = rollout_plan(analysis_interval=timedelta(seconds=30))
    for name in services:  # at step 2 of 3, ready, the next step half an hour away
        store.create(
            progressing_rollout(
                id=f"r-{name}", service=name, deployment=name, plan=plan, step_ready=True
            ),
            actor="U01ALICE",
        )
        store.queue(f"r-{name}", [CARD])
    engine = error_rate_engine(store, clock, services, Healthy(services))
    beats: list[Counter[str]] = []
    try:
        for _ in range(3):
            clock.advance(30)
            store.calls = Counter()
            engine.tick_all(wait_for_ticks=True)
            beats.append(Counter(store.calls))
    finally:
        engine.close()
    assert all(r.verdict == "healthy" for r in store.active())
    assert beats[0]["save"] == ROLLOUTS  # the first beat records each verdict
    for calls in beats[1:]:  # then nothing changes: a quiet beat
        # No stored measurement is read: each rollout is within its rule on the beat's own
        # measurement, so the older ones would change nothing of the judgement.
        assert calls == Counter(active=1, holding=1, add_measurements=1), calls


class Erring(Healthy):
    """As Healthy, but the canaries of `erring` answer half their requests with a 500."""

    def __init__(self, services: list[str], erring: set[str]) -> None:
        super().__init__(services)
        self._errors = [
            Series({"namespace": "shop", "service": service, "track": "canary", "code": "500"}, 1.0)
            for service in sorted(erring)
        ]

    def query(self, promql: str) -> list[Series]:
        if "by (namespace, service, track, code)" in promql:
            return self._series + self._errors
        return self._series


def test_a_rollout_beyond_its_threshold_is_judged_on_its_stored_history(tmp_path: Path) -> None:
    """Only the rollouts beyond a rule on the beat's measurement read their older ones (how
    long it has been beyond decides a `for`), a group of rollouts per query; each breaches
    once its rule's `for` is covered, and the others stay healthy."""
    services = [f"svc-{index:04d}" for index in range(ROLLOUTS)]
    erring = {services[3], services[150]}
    store, clock = CountingStore(tmp_path / "canary.db"), FakeClock()
    store.calls = Counter()
    plan = rollout_plan(analysis_interval=timedelta(seconds=30))
    for name in services:
        store.create(
            progressing_rollout(
                id=f"r-{name}", service=name, deployment=name, plan=plan, step_ready=True
            ),
            actor="U01ALICE",
        )
    engine = error_rate_engine(store, clock, services, Erring(services, erring))
    reads: list[int] = []
    verdicts: list[dict[str, str | None]] = []
    try:
        for _ in range(3):  # `for: 1m` at 30 s: breached on the third beyond sample
            clock.advance(30)
            store.calls = Counter()
            engine.tick_all(wait_for_ticks=True)
            reads.append(store.calls["stored_measurements_of"])
            verdicts.append({r.service: r.verdict for r in store.active()})
    finally:
        engine.close()
    assert reads == [1, 1, 1]  # the erring two, in one query; nobody else's history
    assert all(verdicts[2][name] == "healthy" for name in services if name not in erring)
    assert [v[services[3]] for v in verdicts[:2]] == ["healthy", "healthy"]  # pending
    for name in erring:
        last = store.history(name)[0]
        assert (last.verdict, last.phase) == ("breached", Phase.ROLLED_BACK)


class Gone:
    """Prometheus that has no data for anyone (the exporter's series went stale)."""

    def query(self, promql: str) -> list[Series]:
        return []


def test_a_rollout_held_for_missing_data_is_saved_when_the_hold_begins_and_ends(
    tmp_path: Path,
) -> None:
    """Each tick of a hold moves its bookkeeping on (how long the step has been held), which
    nobody sees while it lasts: 1,000 held rollouts were each saved every tick, the tick's CPU
    growing from 0.9 to 2.0 s in 8 ticks (bench/scale.py). Saved once when the hold begins and
    once when it ends, with the whole time held counted then."""
    services = [f"svc-{index:03d}" for index in range(20)]
    store, clock = CountingStore(tmp_path / "canary.db"), FakeClock()
    store.calls = Counter()
    plan = rollout_plan(no_data_alert_after=timedelta(hours=1))  # no page during the test
    for name in services:
        store.create(
            progressing_rollout(
                id=f"r-{name}",
                service=name,
                deployment=name,
                plan=plan,
                step_ready=True,
                step_started_at=clock.now(),
            ),
            actor="U01ALICE",
        )
    prometheus: Any = Gone()

    class Switch:
        def query(self, promql: str) -> list[Series]:
            answer: list[Series] = prometheus.query(promql)
            return answer

    engine = error_rate_engine(store, clock, services, Switch())
    began = clock.now() + timedelta(seconds=30)
    saves: list[int] = []
    try:
        for _ in range(6):
            clock.advance(30)
            store.calls = Counter()
            engine.tick_all(wait_for_ticks=True)
            saves.append(store.calls["save"])
        held = store.active()
        prometheus = Healthy(services)
        clock.advance(30)
        store.calls = Counter()
        engine.tick_all(wait_for_ticks=True)
        saves.append(store.calls["save"])
    finally:
        engine.close()
    assert all(r.no_data_since == began and r.verdict == "no_data" for r in held)
    assert saves == [len(services), 0, 0, 0, 0, 0, len(services)]
    for rollout in store.active():
        assert (rollout.verdict, rollout.no_data_since) == ("healthy", None)
        assert rollout.step_held == clock.now() - began
        audited = [row["action"] for row in store.audit_rows(rollout.id)]
        assert audited == ["start", "tick", "tick"], audited  # created, hold began, ended


class NotReady(FakeRouter):
    """The canary's pods never become ready: every tick asks for the step's weight again."""

    def status(self, rollout: Rollout) -> TrafficStatus:
        self.world.call("read status")
        return TrafficStatus(weight=0.0, canary_ready=False, detail="pulling the image")


class Interrupted(SqliteStore):
    """A store that lets another replica act right after a beat has read the active rollouts."""

    interloper: Any = None

    def active(self) -> list[Rollout]:
        records = super().active()
        if self.interloper is not None:
            act, self.interloper = self.interloper, None
            act()
        return records


def test_a_tick_never_acts_on_a_beat_record_that_a_command_has_since_replaced(
    tmp_path: Path,
) -> None:
    world, clock = World(), FakeClock()
    config = load_config_text(CONFIG)
    path = tmp_path / "shared.db"
    store = Interrupted(path)
    leader = Engine(config=config, store=store, routers={"replicas": NotReady(world)}, clock=clock)
    follower = Engine(
        config=config,
        store=SqliteStore(path),
        routers={"replicas": NotReady(world)},
        clock=clock,
        leading=lambda: False,
    )
    try:
        accepted = leader.start(
            StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
        )
        clock.advance(1)
        leader.tick_all(wait_for_ticks=True)  # not ready: the step's weight is asked again
        assert world.log[-1] == "set weight 25"
        rollback = Rollback(by="UBOB", reason="wrong tag")
        store.interloper = lambda: follower.command(accepted.id, rollback, action="rollback")
        world.log.clear()
        clock.advance(1)
        leader.tick_all(wait_for_ticks=True)
        # The beat's record still asked for 25 %; the stored one is rolling back.
        assert "set weight 25" not in world.log
        assert "roll back" in world.log
        final = store.get(accepted.id)
        assert final is not None and final.phase == Phase.ROLLED_BACK
    finally:
        leader.close()
        follower.close()

"""The engine carries out the state machine's decisions against the cluster and the store.

It decides nothing itself (rollout/machine/ does) and never calls Slack: a decision's
messages are queued in the outbox in the same transaction as the decision, and the sender
(rollout/sender.py) posts them on its own thread. A decision that moves traffic queues its
messages held; they are released once its cluster actions are done, so the cluster always comes
before Slack and a rate limit can never delay a rollback.

Two kinds of lock, so that no request ever waits on I/O: a rollout's record lock is held only
to read, decide and save (database work, milliseconds), and commands take nothing else; its
work lock keeps one tick of a rollout at a time and is held across cluster calls, which only
ticks wait for. Ticks of different rollouts run on a bounded pool, so one whose API calls hang
(each bounded by its deadline, see rollout/kube.py) holds one worker and delays no other.

What the engine does is kept here (starting, commands, ticks, reconciliation); how a decision
is saved is in rollout/engine_save.py, gates in rollout/engine_gates.py, and the leader's
pick-up of the followers' decisions in rollout/follower.py, each for the reason it gives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from rollout import machine, outbox
from rollout.analysis import Analyzer
from rollout.cluster import OUTCOME, Cluster
from rollout.commands import Command
from rollout.config import Config
from rollout.engine_gates import Gates
from rollout.engine_save import (
    ALL,
    BOT,
    STALE_ATTEMPTS,
    Decide,
    Known,
    Recorder,
    again_if_stale,
)
from rollout.follower import AWAIT_POLL_S, Seen, await_leader
from rollout.gates.job import JobGates
from rollout.kube_reads import BeatReads, observing
from rollout.machine import ClusterAction, Decision, Refusal, advance, apply_command
from rollout.model import Phase, Rollout
from rollout.observer import BeatHistories, Observer
from rollout.oci import ImageRegistry
from rollout.pool import Locks, TickPool
from rollout.ports import Clock
from rollout.start import KeyReused, StartRefused, StartRequest, Starts
from rollout.stores import Message, Store
from rollout.traffic.base import TrafficRouter
from rollout.wording import unquote

# Also importable from here, as they were before the split.
__all__ = [
    "ALL",
    "AWAIT_POLL_S",
    "BOT",
    "STALE_ATTEMPTS",
    "Decide",
    "Engine",
    "KeyReused",
    "StartRefused",
    "StartRequest",
    "again_if_stale",
]
log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        routers: Mapping[str, TrafficRouter],
        clock: Clock,
        analyzer: Analyzer | None = None,
        parallel: int = 8,
        on_queued: Callable[[], None] | None = None,
        registry: ImageRegistry | None = None,
        jobs: Callable[[Cluster], JobGates] | None = None,
        leading: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._routers = routers
        self._clock = clock
        self.observer = Observer(config=config, store=store, routers=routers, analyzer=analyzer)
        # Without a registry client (tests of other things) no digest is pinned at start.
        self._starts = Starts(config=config, store=store, clock=clock, pinning=registry is not None)
        self._cluster = Cluster(config=config, store=store, routers=routers, clock=clock)
        self._on_queued = on_queued or (lambda: None)
        self._records = Locks()
        self._recorder = Recorder(store=store, records=self._records, on_queued=self._on_queued)
        self._decide = self._recorder.decide
        # Pre-flight gates block for up to their timeout: they run there, never in a tick.
        self._gates = Gates(
            config=config,
            store=store,
            clock=clock,
            recorder=self._recorder,
            registry=registry,
            jobs=jobs(self._cluster) if jobs is not None else None,
            tick=self.tick,
            leading=lambda: self._leading(),
        )
        self._work = Locks()
        self._pool = TickPool(workers=parallel)
        self._last_tick: dict[str, datetime] = {}
        # With several replicas only the leader acts on the cluster (bot/ha.py); elsewhere a
        # command's decision is saved and the leader carries it out (`pick_up`).
        self._leading = leading or (lambda: True)
        self._seen = Seen()
        self._last_reads: BeatReads | None = None

    # ----------------------------------------------------------------- starting

    def accept(self, request: StartRequest, *, delivery: str | None = None) -> Rollout | None:
        return self._starts.accept(request, delivery=delivery)

    def accept_once(
        self, request: StartRequest, *, key: str, fingerprint: str
    ) -> tuple[Rollout, bool]:
        return self._starts.accept_once(request, key=key, fingerprint=fingerprint)

    def begin(self, rollout_id: str, *, wait: float = 30.0) -> Rollout:
        """The cluster part of a start, right after the acknowledgement. With pre-flight gates
        this returns once the first is launched: they run on the gate workers, for up to their
        timeouts, and report in the thread (no caller's thread waits for them). A replica that
        does not lead waits (at most `wait` seconds) for the leader to have carried it out, so
        that a start refused on the cluster is still answered to the person who asked."""
        if self._leading():
            self.tick(rollout_id)
        else:
            await_leader(self.store, rollout_id, wait=wait)
        started = self.store.get(rollout_id)
        assert started is not None
        if started.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            raise StartRefused(
                f"Rollout of `{started.service}` stopped: {unquote(started.reason or '')}"
            )
        return started

    def start(self, request: StartRequest) -> Rollout:
        accepted = self.accept(request)
        assert accepted is not None
        return self.begin(accepted.id)

    # ----------------------------------------------------------------- commands

    def command(
        self, rollout_id: str, command: Command, *, action: str, delivery: str | None = None
    ) -> Rollout | Refusal | None:
        """Decide on a person's command and save the decision with its messages: database
        work only, so it runs before Slack's acknowledgement and never waits for a tick's
        cluster calls. `carry_on` does the rest. A `delivery` already handled returns None."""
        with self._records.of(rollout_id):
            if delivery is not None and self.store.delivery_seen(delivery):
                return None
            now = self._clock.now()
            outcome = again_if_stale(
                partial(self._command_once, rollout_id, command, action=action, now=now)
            )
            if delivery is not None:
                self.store.first_delivery(delivery, at=now)
            return outcome

    def _command_once(
        self, rollout_id: str, command: Command, *, action: str, now: datetime
    ) -> Rollout | Refusal:
        rollout = self.store.get(rollout_id)
        if rollout is None:
            return Refusal("That rollout does not exist (any more); nothing was changed.")
        outcome = apply_command(rollout, command, now=now)
        if isinstance(outcome, Refusal):
            self.store.audit(
                at=now,
                actor=command.by,
                action=f"refused: {action}",
                rollout_id=rollout_id,
                detail=outcome.message,
            )
            return outcome
        reason = getattr(command, "reason", None)  # pause, rollback and reject carry one
        self._recorder.save(rollout, outcome, actor=command.by, action=action, detail=reason)
        return outcome.rollout

    def carry_on(self, rollout_id: str) -> None:
        """Do now what the last saved decision implies, rather than at the next beat. Only
        the leader acts: on another replica the saved decision waits for its `pick_up`."""
        if self._leading():
            self.tick(rollout_id)

    def pick_up(self) -> None:
        """The leader's short poll: tick at once every active rollout whose record changed
        since this engine last ticked it (a command or a start saved by another replica),
        rather than at its next analysis beat."""
        changed = self._seen.changed(self.store.active(), running=self._pool.running())
        for rollout_id in changed:
            self._pool.launch(rollout_id, partial(self.tick, rollout_id))

    # ----------------------------------------------------------------- ticks

    def tick_all(self, *, wait_for_ticks: bool = False) -> None:
        """One beat: measure every due rollout in one batch, then tick each on the pool.
        A rollout whose last tick is still running (its calls hang) is left out.

        What every tick of the beat needs from the store is read here once for all of them
        (`Beat`): the records (already loaded to find the due ones) and which rollouts have
        held messages; the measurements are stored in one transaction."""
        if not self._leading():
            return  # the Lease is lost (or not yet renewed): act on nothing
        now = self._clock.now()
        running = self._pool.running()
        due = [r for r in self.store.active() if self._is_due(r, now) and r.id not in running]
        if due:
            self._launch(due, now=now)
        if wait_for_ticks:
            self.drain()

    def _launch(self, due: list[Rollout], *, now: datetime) -> None:
        # One LIST per namespace and kind for the whole beat (rollout/kube_reads.py), the
        # last beat's ones started now, to run while the measurement waits for Prometheus.
        reads = BeatReads()
        reads.prefetch(self._last_reads)
        self._last_reads = reads
        held = frozenset(self.store.holding())
        latest = self.observer.record_measurements(due, now=now)
        beat = Beat(
            at=now,
            reads=reads,
            records={r.id: r for r in due},
            held=held,
            histories=self.observer.histories(due, now=now, latest=latest),
        )
        for rollout in due:
            self._last_tick[rollout.id] = now
            self._pool.launch(rollout.id, partial(self.tick, rollout.id, beat=beat))

    def drain(self) -> None:
        """Wait for every tick and gate running (tests, benchmarks, shutdown); a gate's end
        ticks its rollout, which may start the next gate."""
        while True:
            self._gates.drain()
            self._pool.drain()
            if not self._gates.running() and not self._pool.running():
                return

    def tick(self, rollout_id: str, *, beat: Beat | None = None) -> None:
        """One rollout's tick. With a `beat`, the tick decides on the record the beat read,
        at the beat's time (the measurement just taken must not look stale), and reads the
        cluster from the beat's LISTs (rollout/kube_reads.py); but a start and a gate read
        the record afresh and the cluster by name: they decide what to create."""
        with self._work.of(rollout_id):
            left: Rollout | None = None
            try:
                left = self._tick(rollout_id, beat=beat)
            finally:
                # The record as this tick left it; read again only where the tick cannot tell.
                self._seen.note(
                    rollout_id, left if left is not None else self.store.get(rollout_id)
                )

    def _tick(self, rollout_id: str, *, beat: Beat | None) -> Rollout | None:
        """Returns the rollout as the tick saved or found it (None: read it to know)."""
        if not self._leading():
            # Creating the canary, a job gate's Job and every step act on the cluster, which
            # only the leader does: a gate worker's tick on a replica that has just lost the
            # Lease (paused past its renew deadline) must create nothing.
            return None
        known = beat.known(rollout_id) if beat is not None else None
        rollout = known[0] if known is not None else self.store.get(rollout_id)
        if rollout is None or rollout.phase.is_terminal:
            self._last_tick.pop(rollout_id, None)
            return None
        if rollout.phase == Phase.PENDING:
            rollout = self._start_on_cluster(rollout)
            if rollout.phase.is_terminal or machine.next_preflight(rollout) is not None:
                return None
        now = beat.at if beat is not None else self._clock.now()
        if rollout.gate is not None and rollout.gate.startswith("job:"):
            rollout = self._gates.check_job(rollout, now=now)
        reads = beat.reads if beat is not None else None
        history = beat.histories.take(rollout_id) if beat is not None else None
        with observing(reads):
            observation, analysis = self.observer.observe(rollout, now=now, history=history)

        def decide(fresh: Rollout) -> Decision:
            decision = advance(fresh, observation, now=now)
            verdict = analysis.verdict.value if analysis else decision.rollout.verdict
            return replace(decision, rollout=replace(decision.rollout, verdict=verdict))

        def snapshots(before: Rollout, decision: Decision) -> list[Message]:
            if analysis is None:
                return []
            return outbox.snapshots(before, decision, at=analysis.at, breach=observation.breach)

        decision, mark = self._decide(rollout_id, decide, extra=snapshots, settle=True, known=known)
        actions = [a for a in decision.actions if isinstance(a, ClusterAction)]
        if not actions or not self._leading():
            return decision.rollout  # nothing to do, or no longer the leader: the next does it
        with observing(reads):
            outcomes = tuple(self._cluster.execute(decision.rollout, a) for a in actions)
        ok = all(outcome.error is None for outcome in outcomes)
        later = self._clock.now()
        return self._decide(
            rollout_id,
            lambda fresh: machine.after(fresh, outcomes, now=later),
            action=OUTCOME,
            release_upto=mark,
            released=ok,
        )[0].rollout

    def _start_on_cluster(self, rollout: Rollout) -> Rollout:
        """Read the stable workload, then create the canary objects; what came of each is
        fed to the machine. A start refused here ends quietly (nothing was created)."""
        if not rollout.stable_image:
            decide, name = self._cluster.resolve(rollout)
            quiet = name == "start refused"
            rollout = self._decide(rollout.id, decide, action=name, quiet=quiet)[0].rollout
        if rollout.phase != Phase.PENDING:
            return rollout
        key = machine.next_preflight(rollout)
        if key is not None:
            return self._gates.preflight(rollout, key)
        prepared = self._cluster.prepare(rollout)
        if prepared is None:
            return rollout
        decide, name = prepared
        return self._decide(rollout.id, decide, action=name)[0].rollout

    def reconcile(self) -> bool:
        """At start-up: put the stored weight back on the cluster (no message: nothing new).

        True when every active rollout was reconciled; the caller tries again otherwise, and
        reports the bot ready (`/readyz`) only once this is True.
        """
        reconciled = True
        for rollout in self.store.active():
            if rollout.step_index < 0 or rollout.phase not in machine.WATCHED_PHASES:
                continue
            if rollout.paused_from == Phase.PROMOTING:
                continue  # stable is half-way to the new image: no step weight to put back
            with self._work.of(rollout.id):
                try:
                    self._cluster.reapply(rollout)
                except Exception:
                    log.exception("reconciling %s failed", rollout.id)
                    reconciled = False
        return reconciled

    def snapshot_now(self, rollout_id: str, *, by: str) -> bool:
        """`/canary status <service>`: a snapshot with chart in the thread, queued."""
        rollout = self.store.get(rollout_id)
        now = self._clock.now()
        if rollout is None or rollout.thread_ts is None:
            return False
        if self.observer.analyse(rollout, now=now) is None:
            return False
        self.store.audit(at=now, actor=by, action="snapshot", rollout_id=rollout.id)
        key = f"snapshot:asked:{now.isoformat()}"
        self.store.queue(rollout.id, outbox.snapshot(key, title="Snapshot on request", at=now))
        self._on_queued()
        return True

    def close(self, timeout: float | None = None) -> None:
        """Start no more ticks or gates; wait up to `timeout` s in all for those running."""
        self._pool.close(self._gates.close(timeout))

    def _is_due(self, rollout: Rollout, now: datetime) -> bool:
        last = self._last_tick.get(rollout.id)
        slack = timedelta(milliseconds=250)
        return last is None or now - last >= rollout.plan.analysis_interval - slack


@dataclass(frozen=True)
class Beat:
    """What one beat reads once for all its ticks: its time, its cluster reads, every due
    rollout's record as `Store.active` loaded it, the rollouts with held messages then, and
    the measurements each is judged on (read a group of rollouts at a time)."""

    at: datetime
    reads: BeatReads
    records: Mapping[str, Rollout]
    held: frozenset[str]
    histories: BeatHistories

    def known(self, rollout_id: str) -> Known | None:
        """The beat's record to decide on, or None where a tick must read it afresh: a start
        and a gate act on the cluster from what the record says before any save."""
        record = self.records.get(rollout_id)
        if record is None or record.phase == Phase.PENDING or record.gate is not None:
            return None
        return record, rollout_id in self.held

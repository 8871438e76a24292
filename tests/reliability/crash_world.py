"""The world of the fifty-SIGKILL test (test_crash_safety.py): the rollouts the team plans,
a sampler of the canary and stable replica counts, and the bot killed and restarted, with
the check at every restart that the cluster already holds the stored weight.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from canary_sandbox.sandbox import Sandbox
from rollout.traffic.replicas import split_replicas
from tests.reliability.support import (
    BotProcess,
    replicas,
    scale_behind_the_bots_back,
    stored_rollouts,
)

SERVICES = ("checkout", "cart", "search")
REPLICAS = 10
STEPS = (10, 30, 60, 90)
PLANNED_CANARY = [split_replicas(REPLICAS, weight)[0] for weight in STEPS]  # 1, 3, 6, 9
RECONCILED_PHASES = ("progressing", "paused", "awaiting_approval")
ENDED = ("succeeded", "rolled_back")
STEP_TEXT = re.compile(r"Step (\d+) of (\d+)")


@dataclass
class Planned:
    """One rollout the team runs: approve it, or roll it back once step `rollback_at` shows."""

    service: str
    tag: str
    rollback_at: int | None
    rollout_id: str | None = None
    acted: bool = False

    @property
    def expected_phase(self) -> str:
        return "succeeded" if self.rollback_at is None else "rolled_back"


class ClusterSampler(threading.Thread):
    """(time, canary, stable) replicas per service whenever they change, read atomically."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(name="cluster-sampler", daemon=True)
        self._sandbox = sandbox
        self._stopping = threading.Event()
        self.samples: dict[str, list[tuple[float, int | None, int | None]]] = {
            s: [] for s in SERVICES
        }

    def run(self) -> None:
        while not self._stopping.wait(0.004):
            with self._sandbox.kube.store.lock:  # both Deployments at one instant
                now = time.monotonic()
                seen = {
                    s: (replicas(self._sandbox, f"{s}-canary"), replicas(self._sandbox, s))
                    for s in SERVICES
                }
            for service, (canary, stable) in seen.items():
                history = self.samples[service]
                if not history or history[-1][1:] != (canary, stable):
                    history.append((now, canary, stable))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


@dataclass
class CrashWorld:
    sandbox: Sandbox
    bot: BotProcess
    sampler: ClusterSampler
    rng: random.Random
    kills: list[str] = field(default_factory=list)
    reconcile_checks: int = 0
    reconcile_skipped: int = 0
    tampered: int = 0
    # (service, from, to): while its hand-scaled canary is being put right.
    tamper_windows: list[tuple[str, float, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def driver(self) -> Any:
        return self.sandbox.driver_for(self.bot.url)

    def kill_and_restart(self, moment: str) -> None:
        self.bot.kill()
        at_kill = {r["id"]: r for r in stored_rollouts(self.sandbox.db_path)}
        self.kills.append(moment)
        tampered = self._tamper(at_kill) if self.rng.random() < 0.3 else None
        self.bot.start()
        if tampered is not None:
            self.tamper_windows.append((*tampered, time.monotonic()))
        self._check_reconciled(at_kill)

    def _tamper(self, at_kill: dict[str, dict[str, Any]]) -> tuple[str, float] | None:
        """Someone scales a settled canary by hand while the bot is down."""
        settled = [
            r
            for r in at_kill.values()
            if r["phase"] in ("paused", "awaiting_approval")
            or (r["phase"] == "progressing" and r["step_ready"])
        ]
        if not settled:
            return None
        victim = self.rng.choice(settled)
        canary = replicas(self.sandbox, f"{victim['service']}-canary")
        if canary is None:
            return None
        started = time.monotonic()
        wrong = canary + 1 if canary < REPLICAS - 1 else canary - 1
        scale_behind_the_bots_back(self.sandbox, f"{victim['service']}-canary", wrong)
        self.tampered += 1
        return victim["service"], started

    def _check_reconciled(self, at_kill: dict[str, dict[str, Any]]) -> None:
        """Right after start-up, the cluster holds each stored weight the bot had not moved on
        from; a rollout whose stored state changed since the kill is skipped (counted)."""
        before = {r["id"]: r for r in stored_rollouts(self.sandbox.db_path)}
        with self.sandbox.kube.store.lock:
            cluster = {
                s: (replicas(self.sandbox, f"{s}-canary"), replicas(self.sandbox, s))
                for s in SERVICES
            }
        after = {r["id"]: r for r in stored_rollouts(self.sandbox.db_path)}
        for rollout_id, killed in at_kill.items():
            if killed["phase"] not in RECONCILED_PHASES or killed["step_index"] < 0:
                continue
            if not (killed == before.get(rollout_id) == after.get(rollout_id)):
                self.reconcile_skipped += 1
                continue
            self.reconcile_checks += 1
            weight = killed["plan"]["steps"][killed["step_index"]]
            wanted = split_replicas(killed["original_replicas"], weight)
            if cluster[killed["service"]] != wanted:
                self.problems.append(
                    f"restart #{self.bot.starts}: {rollout_id} stored at {weight}% "
                    f"(canary, stable) {wanted}, cluster has {cluster[killed['service']]}"
                )


def by_id(world: CrashWorld) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in stored_rollouts(world.sandbox.db_path)}

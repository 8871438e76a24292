"""The state machine's side of gates: which runs next, what a result decides, and a job gate
holding its step's traffic until it passed. Pure: no clock, cluster or Slack."""

from __future__ import annotations

from datetime import timedelta

from rollout import machine
from rollout.events import Finished, GateChecked
from rollout.machine import Announce, Observation, RollBackCanary, SetWeight
from rollout.model import GateResult, Phase
from rollout.serialize import rollout_from_dict, rollout_to_dict
from rollout.traffic.base import TrafficStatus
from tests.builders import NOW, progressing_rollout, rollout, rollout_plan

PREFLIGHT = ("pin_digest", "preflight:0", "preflight:1")
PINNED = "registry:5000/shop/checkout:v2@sha256:" + "a" * 64


def passed(key: str) -> GateResult:
    return GateResult(key=key, name=key, passed=True, detail="ok")


def test_preflight_gates_run_in_plan_order_until_all_passed() -> None:
    pending = rollout(plan=rollout_plan(preflight=PREFLIGHT))
    assert machine.next_preflight(pending) == "pin_digest"
    running = machine.gate_started(pending, "pin_digest", now=NOW).rollout
    assert running.gate == "pin_digest" and running.gate_started_at == NOW
    # Started twice (a second tick before the worker's result): still the one gate.
    assert machine.gate_started(running, "preflight:0", now=NOW).rollout == running
    pinned = machine.gate_finished(running, passed("pin_digest"), now=NOW, canary_image=PINNED)
    assert pinned.rollout.canary_image == PINNED and pinned.rollout.gate is None
    assert pinned.actions == (Announce(GateChecked(name="pin_digest", passed=True, detail="ok")),)
    assert machine.next_preflight(pinned.rollout) == "preflight:0"
    done = pinned.rollout.evolve(
        now=NOW, gate_results=(*pinned.rollout.gate_results, passed("preflight:0"))
    )
    done = done.evolve(now=NOW, gate_results=(*done.gate_results, passed("preflight:1")))
    assert machine.next_preflight(done) is None
    assert rollout_from_dict(rollout_to_dict(done)) == done  # results survive a restart


def test_failed_preflight_gate_ends_the_start_without_a_cluster_action() -> None:
    running = rollout(plan=rollout_plan(preflight=PREFLIGHT), gate="preflight:0")
    failure = GateResult(key="preflight:0", name="webhook", passed=False, detail="HTTP 423: freeze")
    decision = machine.gate_finished(running, failure, now=NOW)
    assert decision.rollout.phase == Phase.ROLLED_BACK
    assert decision.rollout.reason == "could not start: gate webhook failed: HTTP 423: freeze"
    assert not any(isinstance(a, RollBackCanary | SetWeight) for a in decision.actions)
    kinds = [type(a.event) for a in decision.actions if isinstance(a, Announce)]
    assert kinds == [GateChecked, Finished]


def test_stale_result_is_ignored() -> None:
    moved_on = rollout(plan=rollout_plan(preflight=PREFLIGHT), gate=None, phase=Phase.ROLLED_BACK)
    assert machine.gate_finished(moved_on, passed("pin_digest"), now=NOW).rollout == moved_on


def test_job_gate_holds_the_step_traffic_until_it_passed() -> None:
    plan = rollout_plan(gate_steps=(3,), step_interval=timedelta(minutes=1))
    at_step_2 = progressing_rollout(
        plan=plan, step_ready=True, step_started_at=NOW - timedelta(minutes=5)
    )
    healthy = Observation(traffic=TrafficStatus(weight=25.0, canary_ready=True, detail=""))
    held = machine.advance(at_step_2, healthy, now=NOW)
    assert held.rollout.gate == "job:3" and held.rollout.step_index == 1
    assert not any(isinstance(a, SetWeight) for a in held.actions)
    # While the Job runs, ticks change nothing.
    assert machine.advance(held.rollout, healthy, now=NOW).actions == ()
    after = machine.gate_finished(held.rollout, passed("job:3"), now=NOW).rollout
    raised = machine.advance(after, healthy, now=NOW)
    assert raised.rollout.step_index == 2 and SetWeight(50) in raised.actions


def test_failed_job_gate_rolls_back() -> None:
    running = progressing_rollout(plan=rollout_plan(gate_steps=(3,)), gate="job:3")
    failure = GateResult(key="job:3", name="job k6", passed=False, detail="the Job failed")
    decision = machine.gate_finished(running, failure, now=NOW)
    assert decision.rollout.phase == Phase.ROLLING_BACK
    assert decision.actions[0] == RollBackCanary()
    assert "gate job k6 failed" in (decision.rollout.reason or "")

"""Gates: which one runs next, and what a gate's result decides.

Pre-flight gates (`plan.preflight`: the digest pin, then image_exists, webhook and command) run
one at a time while the rollout is `pending`, after the start is accepted and before any canary
object exists; the record's `gate` names the one running, so a tick never waits for it (it runs
on the engine's gate workers) and a restarted bot runs it again. A job gate holds the step it
guards (`plan.gate_steps`): the machine sets `gate` instead of raising the traffic, and raises
it once the gate passed. A failure before the canary exists ends the start, nothing created; a
job gate's failure rolls back.
"""

from __future__ import annotations

from datetime import datetime

from rollout.events import GateChecked
from rollout.machine.outcomes import _finish
from rollout.machine.ticks import start_rollback
from rollout.machine.types import Announce, Decision
from rollout.model import GateResult, Phase, Rollout
from rollout.wording import quote

# Where a gate may be running; a result arriving in any other phase (a person rolled back
# meanwhile, say) is stale and changes nothing.
GATE_PHASES = frozenset({Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED})


def next_preflight(rollout: Rollout) -> str | None:
    """The first pre-flight gate that has not passed yet (None: all passed)."""
    for key in rollout.plan.preflight:
        if not rollout.gate_passed(key):
            return key
    return None


def job_key(step: int) -> str:
    return f"job:{step}"


def gate_started(rollout: Rollout, key: str, *, now: datetime) -> Decision:
    if rollout.gate is not None:
        return Decision(rollout)
    return Decision(rollout.evolve(now=now, gate=key, gate_started_at=now))


def gate_finished(
    rollout: Rollout, result: GateResult, *, now: datetime, canary_image: str | None = None
) -> Decision:
    """A gate's result. Stale results (the rollout moved on, e.g. rolled back meanwhile) are
    ignored. `canary_image`: the digest pin's pinned reference."""
    if rollout.gate != result.key or rollout.phase not in GATE_PHASES:
        return Decision(rollout)
    announce = Announce(GateChecked(name=result.name, passed=result.passed, detail=result.detail))
    done = rollout.evolve(
        now=now,
        gate=None,
        gate_started_at=None,
        gate_results=(*rollout.gate_results, result),
        canary_image=canary_image or rollout.canary_image,
    )
    if result.passed:
        return Decision(done, (announce,))
    reason = f"gate {result.name} failed: {quote(result.detail)}"
    if result.key in rollout.plan.preflight:  # before any canary object exists
        ended = done.evolve(
            now=now, phase=Phase.ROLLED_BACK, reason=f"could not start: {reason}", finished_at=now
        )
        finished = _finish(ended)
        return Decision(ended, (announce, *finished.actions))
    rolling = start_rollback(done, reason=reason, by=None, now=now)
    return Decision(rolling.rollout, (*rolling.actions, announce))

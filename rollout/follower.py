"""How the engine works with several replicas: the leader acts, followers only decide.

Split out of rollout/engine.py because it is about replicas, not about a rollout's course.
Only the leader (bot/ha.py) acts on the cluster; a follower saves a command's or a start's
decision and the leader picks it up on a short poll: it ticks at once every active rollout
whose record is not as its own last tick left it. A follower that accepted a start waits a
while for the leader to carry it out, so that a refusal on the cluster is still answered.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic, sleep

from rollout.model import Phase, Rollout
from rollout.stores import Store

AWAIT_POLL_S = 0.2  # how often a follower looks whether the leader has started a rollout


class Seen:
    """Each active rollout's version as this engine's last tick left it. Every save raises
    the version by one (rollout/stores/sql.py), so a record saved by anyone else since is at
    another version; a tick knows the version it saved or decided on without reading again."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def note(self, rollout_id: str, record: Rollout | None) -> None:
        """After a tick: remember the record's version, or forget a rollout that has ended."""
        if record is None or record.phase.is_terminal:
            self._seen.pop(rollout_id, None)
        else:
            self._seen[rollout_id] = record.version

    def changed(self, active: Iterable[Rollout], *, running: set[str]) -> list[str]:
        """Rollouts saved by someone else since their last tick here, and not ticking now."""
        return [r.id for r in active if r.id not in running and self._seen.get(r.id) != r.version]


def await_leader(store: Store, rollout_id: str, *, wait: float) -> None:
    """Wait (at most `wait` seconds) until the leader has taken the rollout past PENDING, or
    has started its pre-flight gates (which report in the thread, as they do on the leader:
    no request's worker waits for a gate)."""
    deadline = monotonic() + wait
    while monotonic() < deadline:
        rollout = store.get(rollout_id)
        if rollout is None or rollout.phase != Phase.PENDING or rollout.gate_results:
            return
        if rollout.gate is not None:
            return
        sleep(AWAIT_POLL_S)

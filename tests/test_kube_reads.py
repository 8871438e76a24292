"""A beat's cluster reads (rollout/kube_reads.py): a new beat takes over the last beat's LISTs.

The new beat starts the LISTs the last one made, and the last one gives up its copies at once,
so the bot never holds two beats' copies of every object (tens of MB at 5,000 rollouts); a
tick of the last beat still running (its calls hung) then reads by name.
"""

from __future__ import annotations

from typing import Any

from rollout.kube_reads import STALE, BeatReads, Collection

WHERE = Collection(kind="deployments", namespace="shop")


def test_a_new_beat_lists_again_and_the_last_beat_gives_up_its_copies() -> None:
    listed: list[int] = []

    def list_all() -> list[dict[str, Any]]:
        listed.append(len(listed) + 1)
        return [{"metadata": {"name": "checkout"}, "spec": {"replicas": len(listed)}}]

    last = BeatReads()
    assert last.read(WHERE, "checkout", list_all=list_all) == {
        "metadata": {"name": "checkout"},
        "spec": {"replicas": 1},
    }
    beat = BeatReads()
    beat.prefetch(last)
    assert beat.read(WHERE, "checkout", list_all=list_all) == {
        "metadata": {"name": "checkout"},
        "spec": {"replicas": 2},
    }
    assert listed == [1, 2]  # one LIST a beat, the new one started by `prefetch`
    assert last.read(WHERE, "checkout", list_all=list_all) is STALE
